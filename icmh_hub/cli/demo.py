"""``icmh-hub demo``: the main job on a shipped demo zoo, offline."""

from __future__ import annotations

import click

from .options import threads_option

DEMO_Q = 2  # icmh_hub.demo.run.DEMO_Q (a test checks they agree)


@click.command("demo")
@click.option("-o", "--out", default="icmh-demo.png", show_default=True, type=click.Path(dir_okay=False), help="The PNG to write.")
@click.option("--photos/--proxy", default=None,
              help="Real photo crops with EfficientNet-Lite0 (the default when its weights package is installed), "
                   "or synthetic proxy images with the proxy classifier.")
@click.option("--images", "count", default=64, show_default=True, type=click.IntRange(16, 4096), help="How many proxy images to code (--proxy).")
@click.option("--q", default=DEMO_Q, show_default=True, type=click.IntRange(1, 4), help="Rate point of the demo codec.")
@threads_option
def demo_command(out: str, photos: bool | None, count: int, q: int) -> None:
    """Code images for people and for a classifier with a demo zoo (offline); compare."""
    from ..demo.run import run_demo

    result = run_demo(out, count=count - count % 4, q=q, photos=photos)
    if result["fallback"]:
        click.echo(f"no real-photo demo: {result['fallback']}; showing the synthetic proxy images instead", err=True)
    human, machine, metric = result["human"], result["machine"], result["metric"]
    click.echo(f"{result['codec']} q{result['q']}, {result['described']}, real bitstreams, classifier {result['classifier']}")
    if metric == "accuracy":
        click.echo(f"(classifier on the originals: {result['clean_score']:.1%})")
    else:
        click.echo("(top-1 agreement: the classifier's top-1 on the decoded image equals its top-1 on the original; no labels)")
    click.echo(f"{'':24}{'bpp':>8}{metric:>17}{'PSNR':>9}")
    for name, row in (("human (no adapters)", human), ("machine (cls adapters)", machine)):
        click.echo(f"{name:24}{row['bpp']:8.3f}{row['score']:17.1%}{row['psnr']:8.2f} dB")
    saved = 1 - machine["bpp"] / human["bpp"]
    click.echo(f"bits saved by the adapters: {saved:.1%}" if saved >= 0 else f"the adapters spend {-saved:.1%} more bits here")
    if machine["score"] < human["score"]:
        click.echo(f"the classifier gets fewer right on the machine decode ({metric} {machine['score']:.1%} against "
                   f"{human['score']:.1%}): on these images the adapters traded {metric} for bits")
    exact = "yes" if result["human_again_bit_exact"] else "NO"
    click.echo(f"back to human vision: same bytes as the codec that never had adapters: {exact}")
    drawn, count = result["figure_bpp"], result["figure_images"]
    against = (drawn["machine"] > drawn["human"]) != (machine["bpp"] > human["bpp"])
    more = "more" if drawn["machine"] > drawn["human"] else "fewer"
    click.echo(f"figure: {result['figure']} (its first {count} images: human {drawn['human']:.3f} bpp, machine {drawn['machine']:.3f} bpp"
               + (f"; on these the adapters spend {more} bits than the human codec, unlike the average)" if against else ")"))
    if not result["human_again_bit_exact"]:
        raise SystemExit(1)


COMMANDS = [demo_command]
