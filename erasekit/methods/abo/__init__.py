"""All but One: surgical concept erasing with model preservation (arXiv 2312.12807)."""

from erasekit.registry import register_method

register_method("abo", __name__, "AboConfig",
                "All but One: match only the guidance term, penalise drift of ε(∅) (λ)", check="check_request",
                needs=("unconditional-branch",), config_needs="needs", shared_steps=True)
