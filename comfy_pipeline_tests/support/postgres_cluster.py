"""A throw-away PostgreSQL cluster for tests: its own data folder, a Unix socket and a free loopback port.

PostgreSQL refuses to run as root, so under root (CI, this machine) the server runs as the `postgres` user in a
temporary folder it owns. Roles and databases are made over the socket (trust); the code under test connects
over TCP with a password (scram-sha-256), as a deployment does. The password never reaches a command line or a
log: it goes to the server inside SQL over the socket and to Dagster through DAGSTER_POSTGRES_PASSWORD.
"""

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from comfy_pipeline_tests.support.helpers import free_port

INSTALL_HINT = "apt-get install postgresql (then initdb and pg_ctl are in /usr/lib/postgresql/<version>/bin)"


class PostgresUnavailable(Exception):
    """PostgreSQL is not installed here, or cannot be started; the message says which, and what to do."""


def find_binaries() -> Path:
    """The folder that holds initdb and pg_ctl: PATH first, then Debian's /usr/lib/postgresql/<version>/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    raise PostgresUnavailable(f"PostgreSQL is not installed (no initdb/pg_ctl found): {INSTALL_HINT}")


class PostgresCluster:
    """`with PostgresCluster() as pg:` initdb + pg_ctl start; stopped (fast) and removed at the end."""

    def __init__(self) -> None:
        self.bin = find_binaries()
        self.port = free_port()
        self.host = "127.0.0.1"
        self.root = Path(tempfile.mkdtemp(prefix="comfy-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log = self.root / "server.log"
        self._user = None
        self._started = False

    # -- running as the postgres user when we are root --------------------------------------------------------

    def _command(self, *args: str) -> list[str]:
        if os.geteuid() != 0:
            return list(args)
        runuser = shutil.which("runuser")
        if runuser is None:
            raise PostgresUnavailable("running as root and `runuser` is missing, so PostgreSQL cannot be started")
        return [runuser, "-u", self._user, "--", *args]

    def _run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run(self._command(*args), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            output = (proc.stderr or proc.stdout)[-2000:]
            raise PostgresUnavailable(f"{Path(args[0]).name} failed ({proc.returncode}): {output}")

    def start(self) -> "PostgresCluster":
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root and there is no `postgres` user to run PostgreSQL as: {INSTALL_HINT}"
                ) from None
            self._user = "postgres"
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.socket_dir.mkdir()
        if self._user:
            os.chown(self.socket_dir, pwd.getpwnam(self._user).pw_uid, pwd.getpwnam(self._user).pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--no-sync",
                  "--auth-local=trust", "--auth-host=scram-sha-256")
        # A test cluster: durability off, so schema creation and run events are fast on a busy 2-core box.
        options = (f"-k {self.socket_dir} -p {self.port} -c listen_addresses={self.host} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._started = True
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", "60", "start", timeout=90)
        return self

    def stop(self) -> None:
        try:
            if self._started:
                subprocess.run(self._command(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                                             "-t", "30", "stop"), capture_output=True, timeout=60)
                self._started = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PostgresCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- roles and databases ------------------------------------------------------------------------------------

    def admin(self):
        """A psycopg2 connection as the superuser over the Unix socket (autocommit, for CREATE DATABASE)."""
        import psycopg2

        conn = psycopg2.connect(host=str(self.socket_dir), port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        return conn

    def create_database(self, name: str, user: str) -> "Database":
        """A new role with a random password and a database it owns."""
        from psycopg2 import sql

        password = secrets.token_urlsafe(24)
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(user)), [password])
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(user)))
        finally:
            conn.close()
        return Database(self.host, self.port, user, password, name)


class Database:
    def __init__(self, host: str, port: int, user: str, password: str, name: str) -> None:
        self.host, self.port, self.user, self._password, self.name = host, port, user, password, name

    def env(self) -> dict[str, str]:
        """The DAGSTER_POSTGRES_* variables deploy/dagster.yaml reads."""
        return {
            "DAGSTER_POSTGRES_HOST": self.host,
            "DAGSTER_POSTGRES_PORT": str(self.port),
            "DAGSTER_POSTGRES_USER": self.user,
            "DAGSTER_POSTGRES_PASSWORD": self._password,
            "DAGSTER_POSTGRES_DB": self.name,
        }

    def __repr__(self) -> str:  # never the password, whatever prints this
        return f"Database({self.user}@{self.host}:{self.port}/{self.name})"
