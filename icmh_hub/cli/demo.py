"""``icmh-hub demo``: the main job on the shipped demo zoo, offline."""

from __future__ import annotations

import click

from .options import threads_option

DEMO_Q = 2  # icmh_hub.demo.run.DEMO_Q (a test checks they agree)


@click.command("demo")
@click.option("-o", "--out", default="icmh-demo.png", show_default=True, type=click.Path(dir_okay=False), help="The PNG to write.")
@click.option("--images", "count", default=64, show_default=True, type=click.IntRange(16, 4096), help="How many proxy images to code.")
@click.option("--q", default=DEMO_Q, show_default=True, type=click.IntRange(1, 4), help="Rate point of the demo codec.")
@threads_option
def demo_command(out: str, count: int, q: int) -> None:
    """Code proxy images for people and for a classifier with the demo zoo (offline); compare."""
    from ..demo.run import run_demo

    result = run_demo(out, count=count - count % 4, q=q)
    human, machine = result["human"], result["machine"]
    click.echo(f"{result['codec']} q{result['q']}, {result['images']} proxy images, real bitstreams "
               f"(classifier on the originals: {result['clean_accuracy']:.1%})")
    click.echo(f"{'':24}{'bpp':>8}{'accuracy':>10}{'PSNR':>9}")
    for name, row in (("human (no adapters)", human), ("machine (cls adapters)", machine)):
        click.echo(f"{name:24}{row['bpp']:8.3f}{row['accuracy']:10.1%}{row['psnr']:8.2f} dB")
    click.echo(f"bits saved by the adapters: {1 - machine['bpp'] / human['bpp']:.1%}")
    exact = "yes" if result["human_again_bit_exact"] else "NO"
    click.echo(f"back to human vision: same bytes as the codec that never had adapters: {exact}")
    drawn = result["figure_bpp"]
    click.echo(f"figure: {result['figure']} (its first 16 images: human {drawn['human']:.3f} bpp, machine {drawn['machine']:.3f} bpp"
               + ("; on these the adapters spend more bits than the human codec, unlike the average)" if
                  (drawn["machine"] > drawn["human"]) != (machine["bpp"] > human["bpp"]) else ")"))
    if not result["human_again_bit_exact"]:
        raise SystemExit(1)


COMMANDS = [demo_command]
