"""The REPL face of ``lminspect.lens``: ``m.lens(...)``, ``m.dla(...)``, ``m.patch(...)``.

Mixed into :class:`lminspect.api.model.Model`; every method runs under the model's plan
(``m.stitch("0-23,27-29").lens(...)``) unless ``plan=`` is given. Results print as tables and
keep their numbers as numpy arrays (``.recovered``, ``.heads``, ``.target_prob``) and dicts
(``.to_dict()``).
"""

from __future__ import annotations

from typing import Any


class LensMethods:
    """Interpretability instruments on a :class:`Model` (needs ``engine``, ``tokenizer``, ``plan``)."""

    engine: Any
    tokenizer: Any
    plan: Any

    def _plan_for(self, plan: Any) -> tuple[Any, str]:
        from lminspect.stitch import parse_plan, plan_to_string

        p = self.plan if plan is None else parse_plan(plan, self.engine.n_layers)
        p = p if p is not None else parse_plan(None, self.engine.n_layers)
        return p, plan_to_string(p, self.engine.n_layers)

    def _token_ids(self, text: Any, what: str = "prompt") -> list[int]:
        from lminspect.lens.readout import encode_prompt

        return encode_prompt(self.tokenizer, text, self.engine.context_length, what, self.engine.vocab_size)

    def _target(self, spec: Any) -> Any:
        from lminspect.lens.readout import resolve_token

        return None if spec is None else resolve_token(self.tokenizer, spec, self.engine.vocab_size)

    def lens(self, prompt: Any, target: Any = None, k: int = 5, position: int = -1, plan: Any = None) -> Any:
        """Logit lens: the top-``k`` next tokens read after every plan position (``LensResult``);
        with ``target`` (``" Paris"``, ``"id:42"``) also its rank and probability per position."""
        from lminspect.lens import lens_of_text

        p, _ = self._plan_for(plan)
        return lens_of_text(self.engine, self.tokenizer, prompt, p, target=target, k=k, position=position)[0]

    def dla(self, prompt: Any, target: Any, baseline: Any = None, position: int = -1, plan: Any = None) -> Any:
        """Direct logit attribution of ``target`` (minus ``baseline``) per plan position and head
        (``DLAResult``: ``.attn``, ``.mlp``, ``.heads [positions, heads]``)."""
        from lminspect.lens import direct_logit_attribution

        p, text = self._plan_for(plan)
        return direct_logit_attribution(self.engine, self._token_ids(prompt), self._target(target), p,
                                        baseline=self._target(baseline), position=position, plan_text=text)

    def patch(self, clean: Any, corrupt: Any, metric: str, site: str = "resid", plan: Any = None,
              batch_size: int = 64) -> Any:
        """Activation patching clean -> corrupt at every plan position and token (``site`` resid,
        attn, mlp) or head (``site="head"``); ``metric`` like ``"logit_diff: Paris,Rome"``.
        Returns a ``PatchResult`` (``.recovered [positions, tokens|heads]``)."""
        from lminspect.lens import activation_patching, parse_metric
        from lminspect.lens.readout import token_labels

        p, text = self._plan_for(plan)
        c, x = self._token_ids(clean, "clean prompt"), self._token_ids(corrupt, "corrupted prompt")
        m = parse_metric(metric, self.tokenizer, self.engine.vocab_size)
        return activation_patching(self.engine, c, x, m, p, site=site, batch_size=batch_size, plan_text=text,
                                   col_labels=token_labels(self.tokenizer, x))
