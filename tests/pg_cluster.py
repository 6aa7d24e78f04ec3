"""A private PostgreSQL cluster for the tests that stop and restart the database: ``initdb`` in a
temporary directory, a free loopback port, the machine's binaries
(``/usr/lib/postgresql/15/bin``, or ``WOR_BRIDGE_PG_BIN``). As root (CI) the server runs as the
``postgres`` user, as PostgreSQL requires. Nothing is printed but the server's own log file,
which holds no patient data (``log_statement`` is off).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.service_harness import free_port

PG_BIN = Path(os.environ.get("WOR_BRIDGE_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PrivateCluster:
    """One cluster: ``start``, ``stop`` (fast or immediate, i.e. a crash), ``dsn``, ``remove``."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="wor-bridge-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        )

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self._as, *args],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    @property
    def dsn(self) -> str:
        """The connection string of database ``postgres`` on this cluster."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres connect_timeout=5"

    def start(self) -> None:
        """Start the server (on the same port every time) and wait until it accepts."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``immediate`` is a crash (recovery from the WAL at the next start)."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs and delete the cluster."""
        subprocess.run(
            [*self._as, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)
