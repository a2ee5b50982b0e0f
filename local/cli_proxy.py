"""`mxt` commands: proxy (an nginx configuration in front of the gateway)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def proxy() -> None:
    """Configuration of a reverse proxy in front of the gateway."""


@proxy.command("nginx")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write here (and create the tmp/ directories beside it); default: standard output",
)
@click.option(
    "--gateway",
    default=None,
    help="gateway URL nginx forwards to (default: MXT_GATEWAY_URL or http://127.0.0.1:8080)",
)
@click.option("--listen", type=int, default=80, show_default=True, help="port nginx listens on")
@click.option(
    "--stack",
    "stack_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="stack.yml whose route prefixes are listed (default: MXT_STACK_FILE or ./stack.yml)",
)
@click.option(
    "--server-only",
    is_flag=True,
    help="only the upstream, map and server blocks, for an existing nginx's conf.d/",
)
def nginx(
    out: Path | None, gateway: str | None, listen: int, stack_file: Path | None, server_only: bool
) -> None:
    """Write an nginx configuration forwarding the MXT proxy table to the gateway.

    Websocket upgrade on /mxt_websocket/, unbuffered followed logs, body limits and
    timeouts per prefix. Functions deployed later need no reload: the gateway finds them.
    """
    from bricks.errors import BadInput
    from gateway import nginx as conf
    from gateway.settings import GatewaySettings

    settings = GatewaySettings()
    rules = conf.proxy_rules(settings.max_body_bytes, settings.upstream_timeout)
    stack = stack_file or settings.stack_file
    if stack.exists():
        rules = conf.with_stack_routes(rules, stack)
    url = gateway or settings.gateway_url
    try:
        text = (
            conf.server_config(url, listen, rules)
            if server_only
            else conf.nginx_config(url, listen, rules)
        )
    except BadInput as exc:
        raise click.BadParameter(str(exc)) from None
    if out is None:
        click.echo(text, nl=False)
        return
    conf.write_config(out, text)
    click.echo(f"wrote {out}; run: nginx -p {out.parent.resolve()} -c {out.name}", err=True)


COMMANDS: list[click.Command] = [proxy]
