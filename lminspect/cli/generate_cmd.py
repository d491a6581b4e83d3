"""``lminspect generate``: stream a continuation from any model open_store accepts."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from lminspect.cli.threads import Threads

WEIGHTS_HELP = ("stored | float32 | bfloat16 | auto. stored: the file's GGUF Q8_0/Q4_0/Q4_1 blocks or bf16 "
                "bits, dequantized on the fly by the CPU decode steps (prefill stays dense float32); "
                "auto: stored on CPU when the file has such a form and numba is installed, else --dtype.")


def generate_command(
    model: Annotated[str, typer.Argument(help="Model: a .gguf/.safetensors file, a HF dir, a fetched name (smollm2) or hf:ORG/NAME.")],
    prompt: Annotated[str, typer.Argument(help="Prompt text.")] = "Once upon a time",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", help="Most tokens to generate.")] = 64,
    temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy.")] = 0.0,
    temperature_opt: Annotated[float | None, typer.Option("-t", hidden=True)] = None,  # -t is --tensor elsewhere
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", help="Sample from the k most likely tokens.")] = None,
    top_p: Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling mass.")] = None,
    repetition_penalty: Annotated[float, typer.Option("--repetition-penalty", help="HF-style; 1 = off.")] = 1.0,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for sampling.")] = None,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="Stop string (repeatable); not printed.")] = None,
    chat: Annotated[bool, typer.Option("--chat", help="Wrap the prompt in the model's chat template.")] = False,
    dtype: Annotated[str, typer.Option("--dtype", help="float32 or bfloat16.")] = "float32",
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    weights: Annotated[str, typer.Option("--weights", help=WEIGHTS_HELP)] = "auto",
    plan: Annotated[str | None, typer.Option("--plan", "-p", help="Layer plan, e.g. '0-11,8-11,12-29' (see `lminspect stitch`).")] = None,
    threads: Threads = None,
) -> None:
    """Continue a prompt, printing the text as it is generated (speed on stderr).

    The stats line names the weights the matmuls read: on CPU a GGUF (or a fetched model) decodes
    from its stored Q4/Q8 blocks by default (--weights auto); --weights float32 is the dense path.

    Example: lminspect generate smollm2 "Once upon a time" -n 64
    """
    if plan is not None and plan.strip().lower() not in ("", "all"):
        from lminspect.stitch.plans import check_plan_early

        check_plan_early(plan)  # a typo is one line at once, before torch and the model load
    from lminspect.cli.aliases import renamed
    from lminspect.runtime import set_threads, threads_label

    temperature = renamed(temperature, temperature_opt, "-t", "--temperature", 0.0)
    n_threads = set_threads(threads)
    import sys

    from lminspect.generate import generate
    from lminspect.models.open import open_model

    store, lm, tok = open_model(model, dtype=dtype, device=device, weights=weights, threads=n_threads)
    layer_plan = None
    if plan is not None and plan.strip().lower() not in ("", "all"):
        try:
            from lminspect.stitch import parse_plan
        except ImportError:
            from lminspect.errors import UserError

            raise UserError(f"--plan {plan!r}: only 'all' is supported in this build") from None
        layer_plan = parse_plan(plan, lm.n_layers)
        from lminspect.stitch.export import materialize
        from lminspect.stitch.mergekit import warn_model_mismatch

        warn_model_mismatch(layer_plan, model, store)
        lm, layer_plan = materialize(lm, layer_plan)  # a mergekit 'scale' needs the weights scaled
    gen = generate(lm, tok, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                   top_p=top_p, repetition_penalty=repetition_penalty, seed=seed, stop=tuple(stop or ()),
                   plan=layer_plan, chat=chat)
    from lminspect.generate import length_note

    note = length_note(max_new_tokens, lm.context_length, len(gen.prompt_ids))
    if note:
        print(f"lminspect: warning: {note}", file=sys.stderr)
    if not chat:
        sys.stdout.write(prompt)
    stream_text(gen, n_threads)
    dim, end = ("\x1b[2m", "\x1b[0m") if sys.stderr.isatty() else ("", "")  # not rich: its import is 0.1 s
    print(f"{dim}{gen.stats.line()}, {threads_label(n_threads)}{end}", file=sys.stderr)


def stream_text(gen: Any, n_threads: int) -> None:
    """Print a generation's pieces as they come, then a newline. The text is its own progress;
    Ctrl-C ends the line and exits 130 with one line saying how far it got (nothing is written)."""
    import sys

    from lminspect.runtime import NOTHING_WRITTEN, interrupted, threads_label

    def saved() -> str:
        st = gen.stats
        return f"after {st.new_tokens}/{gen.max_new_tokens} new tokens ({threads_label(n_threads)}); {NOTHING_WRITTEN}"

    with interrupted(saved):
        try:
            for piece in gen:
                sys.stdout.write(piece)
                sys.stdout.flush()
        finally:
            gen.cancel()  # a no-op once the generation has ended
            sys.stdout.write("\n")
            sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("generate", rich_help_panel="Models")(generate_command)
