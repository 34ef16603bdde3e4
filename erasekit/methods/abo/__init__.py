"""All but One: surgical concept erasing with model preservation (arXiv 2312.12807)."""
