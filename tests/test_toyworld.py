import random

import numpy as np
import pytest
import torch

from erasekit.core.sources import toyworld_dir
from erasekit.toyworld import domain

MODEL_PRESENT = (toyworld_dir() / "model_index.json").exists()


def test_rendering_is_deterministic():
    scene = domain.Scene(shape=0, color=1, background=2, pattern=1, cx=16.0, cy=15.0, radius=10.0)
    a, b = domain.render(scene, noise_seed=7), domain.render(scene, noise_seed=7)
    assert a.shape == (3, 32, 32) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert 0 < np.abs(a - domain.render(scene, noise_seed=8)).max() < 0.2  # only the noise differs
    images1, captions1, _ = domain.sample_dataset(20, seed=3)
    images2, captions2, _ = domain.sample_dataset(20, seed=3)
    assert np.array_equal(images1, images2) and captions1 == captions2


def test_shapes_and_patterns_render_differently():
    base = dict(color=0, background=0, pattern=0, cx=16.0, cy=16.0, radius=10.0)
    masks = [domain.render(domain.Scene(shape=s, **base), 0) for s in range(len(domain.SHAPES))]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert np.abs(masks[i] - masks[j]).mean() > 0.01
    striped = domain.render(domain.Scene(shape=0, **{**base, "pattern": 1}), 0)
    assert np.abs(striped - masks[0]).mean() > 0.02


def test_captions_name_only_true_attributes():
    rng = random.Random(0)
    for _ in range(500):
        scene, caption = domain.sample_example(rng)
        words = caption.split()
        for attribute, values in domain.ATTRIBUTES.items():
            named = [v for v in values if v in words]
            if attribute == "shape":
                named = [s for s, names in domain.SHAPES.items() if any(n in words for n in names)]
            assert named in ([], [values[scene.labels()[attribute]]]), (caption, attribute)


def test_context_phrases_make_stripes_likely_without_naming_them():
    _, captions, labels = domain.sample_dataset(3000, seed=1)
    striped = domain.PATTERNS.index("striped")
    unnamed = [i for i, c in enumerate(captions) if not any(p in c.split() for p in domain.PATTERNS)]
    context = [i for i in unnamed if any(ctx in captions[i] for ctx in domain.CONTEXTS)]
    plain = [i for i in unnamed if i not in set(context)]
    rate = lambda idx: float(np.mean(labels["pattern"][idx] == striped))  # noqa: E731
    assert rate(context) > 0.8 and rate(plain) < 0.1


def test_tokenizer_round_trip_and_misspelling_split(tokenizer_dir):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tokenizer_dir)
    caption = "a photo of a red striped circle on snow at a party"
    ids = tok(caption).input_ids
    assert tok.decode(ids, skip_special_tokens=True) == caption
    for word in domain.words():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    typo = tok("cirlce", add_special_tokens=False).input_ids
    assert len(typo) >= 2 and tok.unk_token_id not in typo


@pytest.mark.skipif(not MODEL_PRESENT, reason="toy-world model not present")
def test_toyworld_pipeline_loads_with_plain_diffusers():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(toyworld_dir(), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red circle on snow", num_inference_steps=2, output_type="pt",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 3, 32, 32)
    assert pipe.vae.config.latent_channels == 4 and pipe.unet.config.sample_size == 8


@pytest.mark.skipif(not MODEL_PRESENT, reason="toy-world model not present")
def test_classifier_reads_held_out_renders():
    from erasekit.toyworld.models import AttributeClassifier, classifier_path

    classifier = AttributeClassifier.load(classifier_path())
    images, _, labels = domain.sample_dataset(300, seed=12345)
    pred = classifier.predict(torch.from_numpy(images))
    for name in domain.ATTRIBUTES:
        accuracy = float((pred[name].numpy() == labels[name]).mean())
        assert accuracy >= 0.98, (name, accuracy)


def test_text_width_sets_encoder_and_cross_attention(tokenizer_dir):
    from transformers import CLIPTokenizer

    from erasekit.toyworld.models import build_text_encoder, build_unet

    tok = CLIPTokenizer.from_pretrained(tokenizer_dir)
    encoder, unet = build_text_encoder(tok, text_dim=48), build_unet(text_dim=48)
    ids = tok(["a red circle"], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = encoder(ids).last_hidden_state
        out = unet(torch.zeros(1, 4, 8, 8), 10, hidden).sample
    assert hidden.shape[-1] == 48 and out.shape == (1, 4, 8, 8)
    assert all(m.to_k.in_features == 48 for n, m in unet.named_modules() if n.endswith("attn2"))
