"""``edgecam deploy``: install a bundle on a device over SSH, or roll it back."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli._common import cli_errors


@click.command("deploy")
@click.argument("bundle", metavar="[BUNDLE.tar.gz]", required=False)
@click.argument("target", metavar="USER@HOST[:DIR]", required=False)
@click.option("-i", "identity", type=click.Path(exists=True, dir_okay=False), default=None,
              help="SSH private key (ssh -i).")
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=None, help="SSH port.")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE",
              help="Extra ssh/scp -o option (repeatable), e.g. UserKnownHostsFile=PATH.")
@click.option("--dry-run", is_flag=True, help="Print the exact commands without running them.")
@click.option("--rollback", is_flag=True, help="Switch back to the previous release and restart (no BUNDLE).")
@click.option("--no-systemd", is_flag=True, help="Run the runner as a background process with a pidfile.")
@click.option("--system-site-packages", is_flag=True, help="Let the device venv see the OS's Python packages.")
@click.option("--python", "remote_python", default=None, metavar="PY", help="Python on the device [python3].")
@click.option("--install-arg", "install_args", multiple=True, metavar="ARG",
              help="Extra install.sh argument (repeatable), e.g. --install-arg=--user=pi.")
@click.option("--wait", type=click.IntRange(0, 600), default=10, show_default=True,
              help="Seconds to wait for the new release's first telemetry; without any, deploy rolls "
                   "back to the previous release and fails (0: do not wait or check).")
def deploy(bundle, target, identity, port, ssh_options, dry_run, rollback, no_systemd,
           system_site_packages, remote_python, install_args, wait):
    """Upload BUNDLE to USER@HOST[:DIR] (default dir: ~/edgecam), install it and restart.

    Uses the system ssh/scp, so ~/.ssh/config applies; host-key checking stays on.
    The new release must explain a test frame (edgecam doctor --bundle) before it becomes
    current, and send telemetry within --wait seconds after the restart, or it is rolled back;
    the exit code is non-zero whenever the device does not end up on a healthy release.
    With --rollback, give only USER@HOST[:DIR].
    """
    from toolkit.deploy.deploy import SshOptions, deploy as run_deploy
    from toolkit.deploy.scratch import sigterm_unwinds

    if rollback:
        if target is not None or bundle is None:
            raise click.UsageError("--rollback takes only USER@HOST[:DIR]: edgecam deploy --rollback pi@host")
        bundle, target = None, bundle
    elif target is None:
        raise click.UsageError("Missing argument: edgecam deploy BUNDLE.tar.gz USER@HOST[:DIR]")
    elif not Path(bundle).is_file():
        raise click.BadParameter(f"File '{bundle}' does not exist.", param_hint="BUNDLE")
    extra = list(install_args)
    if no_systemd:
        extra.append("--no-systemd")
    if system_site_packages:
        extra.append("--system-site-packages")
    if remote_python:
        extra += ["--python", remote_python]
    with sigterm_unwinds(), cli_errors():  # SIGTERM still removes the scratch dirs
        run_deploy(bundle, target, SshOptions(identity=identity, port=port, options=tuple(ssh_options)),
                   install_args=extra, dry_run=dry_run, rollback=rollback, wait=wait, echo=click.echo)
