"""Hook-site names: the one place that spells them (TransformerLens has ``get_act_name``).

A site is ``"{kind}.{pos}"``: ``kind`` one of ``SITE_KINDS``, ``pos`` the position in the plan
(== the layer index for the full plan). ``run_with_cache``, hooks, the lenses, activations and
the faces build names with ``site_name`` instead of by hand.
"""

from __future__ import annotations

SITE_KINDS = ("resid_in", "resid_out", "attn_out", "mlp_out", "mlp_hidden", "attn_probs", "attn_z")


def site_name(kind: str, pos: int) -> str:
    """``site_name("attn_probs", 3) == "attn_probs.3"`` (not checked: it is on the forward's path;
    ``models.common`` refuses unknown kinds where the user names sites)."""
    return f"{kind}.{int(pos)}"


__all__ = ["SITE_KINDS", "site_name"]
