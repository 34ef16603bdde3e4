"""Text-attention control: record per-token attention maps and rescale chosen tokens.

A diffusers attention processor for every layer where image queries read text tokens (a UNet's
cross-attention attn2; an MMDiT's joint attention, over its text columns) computes the attention
probabilities explicitly, so they can be stored (with or without gradient, for Forget-Me-Not's loss)
and re-weighted per token after the softmax, as Prompt-to-Prompt does to suppress a word.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers.models.attention_processor import Attention

from erasekit.errors import ErasekitError


class AttentionStore:
    """Shared state of the installed processors: what to record, how to rescale."""

    def __init__(self, record: bool = True, keep_grad: bool = False) -> None:
        self.record = record
        self.keep_grad = keep_grad
        # (L,) or (B, L) multipliers on the post-softmax probabilities, or None.
        self.token_scale: torch.Tensor | None = None
        self.text_length: int | None = None  # text tokens in the current call (Flux's single blocks need it)
        self.maps: dict[str, list[torch.Tensor]] = {}

    def reset(self) -> None:
        self.maps = {}

    def add(self, layer: str, probs: torch.Tensor) -> None:
        self.maps.setdefault(layer, []).append(probs if self.keep_grad else probs.detach())

    def steer(self, layer: str, probs: torch.Tensor) -> torch.Tensor:
        """(B, heads, queries, text tokens) attention on the text: scaled per token, then recorded."""
        if self.token_scale is not None:
            scale = self.token_scale.to(probs.dtype).to(probs.device)
            probs = probs * (scale.view(1, 1, 1, -1) if scale.dim() == 1 else scale[:, None, None, :])
        if self.record:
            self.add(layer, probs)
        return probs

    def token_mass(self) -> torch.Tensor:
        """Mean attention each token receives, (B, L), averaged over layers, heads, pixels and calls."""
        per_layer = [torch.stack(calls).mean(0).mean(dim=(1, 2)) for calls in self.maps.values()]
        if not per_layer:
            raise RuntimeError("no attention recorded: run the UNet inside `control_attention`")
        return torch.stack(per_layer).mean(0)

    def token_maps(self, size: int) -> torch.Tensor:
        """Spatial per-token maps (B, L, size, size), resized from every layer and averaged."""
        out = []
        for calls in self.maps.values():
            probs = torch.stack(calls).mean(0).mean(1)  # (B, Q, L)
            side = int(probs.shape[1] ** 0.5)
            spatial = probs.transpose(1, 2).reshape(probs.shape[0], probs.shape[2], side, side)
            out.append(torch.nn.functional.interpolate(spatial, size=(size, size), mode="bilinear"))
        if not out:
            raise RuntimeError("no attention recorded: run the UNet inside `control_attention`")
        return torch.stack(out).mean(0)


def joint_probs(store: AttentionStore, name: str, query: torch.Tensor, key: torch.Tensor, n_text: int,
                text_first: bool) -> torch.Tensor:
    """softmax(q kᵀ / √d) over a joint image + text sequence (B, heads, S, S), SDPA's scale, with the
    image queries' columns on the text tokens steered by the store (scaled, recorded)."""
    probs = (query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5).softmax(dim=-1)
    n = probs.shape[-1]
    text, image = (slice(0, n_text), slice(n_text, n)) if text_first else (slice(n - n_text, n), slice(0, n - n_text))
    to_text = store.steer(name, probs[:, :, image, text])
    to_image = probs[:, :, image, image]
    image_rows = torch.cat([to_text, to_image] if text_first else [to_image, to_text], dim=-1)
    text_rows = probs[:, :, text]
    return torch.cat([text_rows, image_rows] if text_first else [image_rows, text_rows], dim=2)


class ControlledCrossAttnProcessor:
    """The math of diffusers' AttnProcessor, with the probabilities exposed to an AttentionStore."""

    def __init__(self, store: AttentionStore, name: str) -> None:
        self.store = store
        self.name = name

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, seq_len, _ = context.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, seq_len, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))

        probs = attn.get_attention_scores(query, key, attention_mask)  # (B*heads, Q, L)
        heads = attn.heads
        probs = probs.view(batch, heads, *probs.shape[1:])
        probs = self.store.steer(self.name, probs)
        hidden_states = torch.bmm(probs.reshape(batch * heads, *probs.shape[2:]), value)
        hidden_states = attn.batch_to_head_dim(hidden_states)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class ControlledJointAttnProcessor:
    """The math of diffusers' JointAttnProcessor2_0 (SD3's MMDiT), with the image queries' probabilities
    over the text keys exposed to an AttentionStore as (B, heads, image tokens, text tokens) and their
    token scale applied there (the text queries and the image-to-image block are left as they are)."""

    def __init__(self, store: AttentionStore, name: str) -> None:
        self.store = store
        self.name = name

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, *args, **kwargs):
        batch, n_image = hidden_states.shape[:2]

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

        query, key, value = heads(attn.to_q(hidden_states)), heads(attn.to_k(hidden_states)), heads(
            attn.to_v(hidden_states))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        text_q, text_k = heads(attn.add_q_proj(encoder_hidden_states)), heads(attn.add_k_proj(encoder_hidden_states))
        text_v = heads(attn.add_v_proj(encoder_hidden_states))
        if attn.norm_added_q is not None:
            text_q = attn.norm_added_q(text_q)
        if attn.norm_added_k is not None:
            text_k = attn.norm_added_k(text_k)
        query, key, value = torch.cat([query, text_q], 2), torch.cat([key, text_k], 2), torch.cat([value, text_v], 2)
        probs = joint_probs(self.store, self.name, query, key, n_text=key.shape[2] - n_image, text_first=False)
        out = (probs @ value).transpose(1, 2).reshape(batch, -1, attn.heads * value.shape[-1]).to(query.dtype)
        image_out, text_out = out[:, :n_image], out[:, n_image:]
        if not attn.context_pre_only:
            text_out = attn.to_add_out(text_out)
        return attn.to_out[1](attn.to_out[0](image_out)), text_out


class ControlledFluxAttnProcessor:
    """The math of diffusers' FluxAttnProcessor (rotary positions included) with the image queries'
    probabilities over the text keys exposed as (B, heads, image tokens, text tokens). Flux puts the
    text first: in a joint block the text is `encoder_hidden_states`; in a single block it is the first
    `store.text_length` tokens of the joined sequence (control_attention reads that length from the
    transformer call)."""

    def __init__(self, store: AttentionStore, name: str) -> None:
        self.store = store
        self.name = name

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, image_rotary_emb=None) -> torch.Tensor:
        from diffusers.models.embeddings import apply_rotary_emb

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (-1, attn.head_dim))

        query = attn.norm_q(heads(attn.to_q(hidden_states)))
        key = attn.norm_k(heads(attn.to_k(hidden_states)))
        value = heads(attn.to_v(hidden_states))
        if encoder_hidden_states is not None:
            n_text = encoder_hidden_states.shape[1]
            query = torch.cat([attn.norm_added_q(heads(attn.add_q_proj(encoder_hidden_states))), query], dim=1)
            key = torch.cat([attn.norm_added_k(heads(attn.add_k_proj(encoder_hidden_states))), key], dim=1)
            value = torch.cat([heads(attn.add_v_proj(encoder_hidden_states)), value], dim=1)
        else:
            n_text = self.store.text_length
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        q, k, v = (x.transpose(1, 2) for x in (query, key, value))  # (B, heads, S, D)
        probs = joint_probs(self.store, self.name, q, k, n_text=n_text, text_first=True)
        out = (probs @ v).transpose(1, 2).flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return out
        text_out, image_out = out[:, :n_text], out[:, n_text:]
        return attn.to_out[1](attn.to_out[0](image_out.contiguous())), attn.to_add_out(text_out.contiguous())


def text_attention_kind(denoiser: torch.nn.Module, processor_name: str) -> str | None:
    """"cross" for an attention whose keys and values are the text context (a UNet's attn2), "joint" for
    an MMDiT's joint attention over image and text tokens, None otherwise. Not a name test: SD3.5's
    `attn2` is a second self-attention over the image tokens."""
    from diffusers.models.transformers.transformer_flux import FluxAttention

    module = denoiser.get_submodule(processor_name.removesuffix(".processor"))
    if isinstance(module, FluxAttention):  # joint and single blocks: text and image share it
        return "flux"
    if getattr(module, "is_cross_attention", False):
        return "cross"
    if getattr(module, "add_k_proj", None) is not None:
        return "joint"
    return None


PROCESSORS = {"cross": ControlledCrossAttnProcessor, "joint": ControlledJointAttnProcessor,
              "flux": ControlledFluxAttnProcessor}


@contextmanager
def control_attention(
    denoiser: torch.nn.Module, record: bool = True, keep_grad: bool = False
) -> Iterator[AttentionStore]:
    """Install controlled processors on every layer where image queries read text tokens; restore the
    originals on exit."""
    store = AttentionStore(record=record, keep_grad=keep_grad)
    original = denoiser.attn_processors
    kinds = {name: text_attention_kind(denoiser, name) for name in original}
    if not any(kinds.values()):
        raise ErasekitError(f"{type(denoiser).__name__} has no attention where image tokens read text tokens")
    replaced = {name: (PROCESSORS[kinds[name]](store, name) if kinds[name] else proc)
                for name, proc in original.items()}
    denoiser.set_attn_processor(replaced)

    def note_text_length(module, args, kwargs):  # single blocks see the text only inside the joined sequence
        context = kwargs.get("encoder_hidden_states")
        store.text_length = None if context is None else context.shape[1]

    hook = denoiser.register_forward_pre_hook(note_text_length, with_kwargs=True)
    try:
        yield store
    finally:
        hook.remove()
        denoiser.set_attn_processor(original)


def special_prefix(tokenizer) -> int:
    """Tokens before the first word: 1 for CLIP's BOS, 0 for T5 (no BOS)."""
    ids = tokenizer("a").input_ids
    return int(tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id)


def token_indices(tokenizer, prompt: str, word: str) -> list[int]:
    """Positions (including BOS at 0) of the tokens that spell `word` inside `prompt`."""
    ids = tokenizer(prompt).input_ids
    word_ids = tokenizer(word, add_special_tokens=False).input_ids
    if not word_ids:
        raise ValueError(f"{word!r} has no tokens")
    for start in range(len(ids) - len(word_ids) + 1):
        if ids[start : start + len(word_ids)] == word_ids:
            return list(range(start, start + len(word_ids)))
    raise ValueError(f"{word!r} does not occur in {prompt!r} at token level")
