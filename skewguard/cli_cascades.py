"""``skewguard cascade``: the stored versions of each cascade and its champion alias.

skewguard cascade list                      every cascade, its champion and versions
skewguard cascade show NAME|TAG             one version's manifest (the champion by name)
skewguard cascade compose NAME --router TAG --route 1=a --route 0=b --branch a=TAG --branch b=TAG
skewguard cascade promote TAG               make a version the champion (gateways follow)
skewguard cascade rollback NAME             the previous champion back
skewguard cascade shadow NAME TAG [--fraction F]   a version runs a copy of the requests beside the champion
skewguard cascade canary NAME TAG --share S        a version answers a share of the entities
skewguard cascade detach NAME               the champion serves alone again
"""

from __future__ import annotations

import json

import click

from skewguard.errors import ConfigError


@click.group("cascade")
def cascade() -> None:
    """Cascade versions (manifests in the model store) and which one is the champion."""


@cascade.command("list")
def cascade_list() -> None:
    """Every cascade: its champion and how many versions are stored."""
    from skewguard.bentos.manifest import champion_tag, list_manifests
    from skewguard.bentos.variants import variant_of

    names: dict[str, list[str]] = {}
    for tag in list_manifests():
        names.setdefault(tag.split(":", 1)[0].removeprefix("cascade-"), []).append(tag)
    if not names:
        click.echo("no cascades stored; train one with `skewguard train -f <cascade file>`")
    for name, tags in sorted(names.items()):
        variant = variant_of(name)
        beside = f"  {variant.mode} {variant.tag} at {variant.fraction:g}" if variant else ""
        click.echo(f"{name:<24}champion {champion_tag(name) or '-'}  ({len(tags)} versions){beside}")


@cascade.command("show")
@click.argument("name_or_tag")
def cascade_show(name_or_tag: str) -> None:
    """One version's manifest as JSON: NAME shows the champion, a tag any version."""
    from skewguard.bentos.manifest import champion, load_manifest

    manifest = load_manifest(name_or_tag) if ":" in name_or_tag else champion(name_or_tag)
    if manifest is None:
        raise ConfigError(f"Cascade {name_or_tag!r} has no champion; give a version's tag.", field="name")
    click.echo(json.dumps(manifest.model_dump(mode="json", exclude={"input_spec"}), indent=1))


@cascade.command("compose")
@click.argument("name")
@click.option("--router", "router_tag", default=None, help="The router model's tag (none: one model).")
@click.option("--route", "routes", multiple=True, help="CLASS=BRANCH: where a router class sends a row.")
@click.option(
    "--rule",
    default="top",
    show_default=True,
    help="'top' (the most probable class picks) or a threshold in (0, 1) on --positive-class.",
)
@click.option("--positive-class", default=None, help="With a threshold: the class it applies to.")
@click.option("--branch", "branches", multiple=True, required=True, help="BRANCH=TAG: a branch's model.")
@click.option("--promote", "crown", is_flag=True, help="Make it the champion at once.")
def cascade_compose(
    name: str,
    router_tag: str | None,
    routes: tuple[str, ...],
    rule: str,
    positive_class: str | None,
    branches: tuple[str, ...],
    crown: bool,
) -> None:
    """Compose a cascade version over models packaged with `skewguard package`; print its tag."""
    from skewguard.bentos.manifest import compose_manifest, promote, save_manifest

    threshold = None if rule == "top" else _threshold(rule)
    manifest = compose_manifest(
        name,
        branches=_pairs(branches, "--branch"),
        router_tag=router_tag,
        routes=_pairs(routes, "--route") if router_tag else None,
        threshold=threshold,
        positive_class=positive_class if threshold is not None else None,
        threshold_reason="" if threshold is None else f"set with skewguard cascade compose --rule {rule}",
    )
    tag = save_manifest(manifest)
    if crown:
        promote(tag)
    click.echo(f"{tag} ({'champion' if crown else 'candidate'})")


def _threshold(rule: str) -> float:
    try:
        return float(rule)
    except ValueError:
        raise ConfigError(f"--rule {rule!r}: expected 'top' or a number in (0, 1).", field="rule") from None


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, target = value.partition("=")
        if not sep or not key or not target:
            raise ConfigError(f"{option} {value!r}: expected KEY=VALUE.", field=option.lstrip("-"))
        pairs[key] = target
    return pairs


@cascade.command("promote")
@click.argument("tag")
def cascade_promote(tag: str) -> None:
    """Make the version TAG its cascade's champion; gateways watching the alias follow."""
    from skewguard.bentos.manifest import promote

    manifest = promote(tag)
    click.echo(f"{manifest.tag} is the champion of {manifest.name}")


@cascade.command("rollback")
@click.argument("name")
def cascade_rollback(name: str) -> None:
    """Make the previous champion of NAME the champion again."""
    from skewguard.bentos.manifest import previous_champion, promote

    previous = previous_champion(name)
    if previous is None:
        raise ConfigError(f"Cascade {name!r} has no earlier champion to roll back to.", field="name")
    manifest = promote(previous)
    click.echo(f"{manifest.tag} is the champion of {name} again")


@cascade.command("shadow")
@click.argument("name")
@click.argument("tag")
@click.option(
    "--fraction", default=1.0, show_default=True, help="The share of requests copied to it, in (0, 1]."
)
def cascade_shadow(name: str, tag: str, fraction: float) -> None:
    """Run version TAG as a shadow of NAME's champion: it answers nobody, the log keeps its answers."""
    from skewguard.bentos.variants import attach_variant

    variant = attach_variant(name, tag, "shadow", fraction)
    click.echo(
        f"{variant.tag} shadows {variant.champion} on {fraction:.0%} of the requests; gateways follow "
        f"within their watch interval. Compare them with `skewguard compare {name}`."
    )


@cascade.command("canary")
@click.argument("name")
@click.argument("tag")
@click.option("--share", type=float, required=True, help="The share of routing keys it answers, in (0, 1).")
def cascade_canary(name: str, tag: str, share: float) -> None:
    """Let version TAG answer a share of NAME's entities (by a hash of the entity key) as a canary."""
    from skewguard.bentos.variants import attach_variant

    variant = attach_variant(name, tag, "canary", share)
    click.echo(
        f"{variant.tag} answers {share:.0%} of the entities of {name} beside {variant.champion}; gateways "
        f"follow within their watch interval. Compare them with `skewguard compare {name}`."
    )


@cascade.command("detach")
@click.argument("name")
def cascade_detach(name: str) -> None:
    """Detach NAME's shadow or canary: its champion serves alone again."""
    from skewguard.bentos.variants import detach_variant

    variant = detach_variant(name)
    if variant is None:
        click.echo(f"{name} had no shadow or canary attached")
        return
    click.echo(f"{variant.mode} {variant.tag} detached from {name}")
