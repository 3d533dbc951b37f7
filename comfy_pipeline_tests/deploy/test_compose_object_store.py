"""The object-store deployment files (issue 22): deploy/docker-compose.s3.yaml (your bucket) and
deploy/docker-compose.minio.yaml (a local MinIO), read as docker compose reads an override of
deploy/docker-compose.yaml, and the code server's resulting settings tried against a real S3 API server on
loopback. Docker itself is used only where `docker compose` is installed."""

import re
import shutil
import subprocess
import sys

import pytest
import yaml

from comfy_pipeline_tests.support.helpers import REPO, clean_env

DEPLOY = REPO / "deploy"
BASE, S3, MINIO = "docker-compose.yaml", "docker-compose.s3.yaml", "docker-compose.minio.yaml"
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
SECRET = re.compile("PASSWORD|TOKEN|SECRET")
IAM_ACTIONS = ("s3:PutObject", "s3:GetObject", "s3:ListBucket", "s3:DeleteObject", "s3:AbortMultipartUpload",
               "s3:ListBucketMultipartUploads")


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text(encoding="utf-8"))


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error} and $$, for the forms these files use."""
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        name, op, arg = match.groups()
        found = env.get(name)
        missing = found is None or (found == "" and op and op.startswith(":"))
        if missing and op and op.endswith("?"):
            raise ValueError(f"required variable {name}: {arg}")
        return (arg or "") if missing else found

    return VARIABLE.sub(one, value.replace("$$", "\0")).replace("\0", "$")


def merged_env(override: str, env: dict[str, str]) -> dict[str, str]:
    """The code server's environment with `override` on top of the base file, as compose merges it: a key with no
    value is taken from compose's own environment (deploy/.env or the shell), else left out."""
    env = {"DAGSTER_POSTGRES_PASSWORD": "from-deploy-env", **env}  # the base file requires it
    merged = {}
    for name in (BASE, override):
        for key, value in (load(name)["services"]["code-server"].get("environment") or {}).items():
            if value is None:
                merged.pop(key, None)
                if key in env:
                    merged[key] = env[key]
            else:
                merged[key] = str(interpolate(value, env))
    return merged


@pytest.mark.parametrize("override", [S3, MINIO])
def test_each_override_extends_the_base_services_and_depends_on_services_that_exist(override):
    base, extra = load(BASE), load(override)
    assert extra["name"] == base["name"]  # the same compose project: it overrides, not a second deployment
    services = set(base["services"]) | set(extra["services"])
    for name, service in extra["services"].items():
        assert name in base["services"] or "image" in service, f"{name}: a new service needs an image"
        for needed in service.get("depends_on") or {}:
            assert needed in services, f"{override}: {name} depends on {needed}, which no file defines"
    # Only the code server runs the runs and evaluates the sensors (deploy/docker-compose.yaml): it alone gets
    # the store's settings.
    assert {n for n in extra["services"] if n in base["services"]} == {"code-server"}


def test_the_s3_override_takes_everything_from_the_environment_and_writes_no_credential():
    service = load(S3)["services"]["code-server"]
    env = service["environment"]
    assert env["COMFY_PIPELINE_OUTPUT_DIR"].startswith("${COMFY_PIPELINE_OUTPUT_DIR:?")
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert env[key] is None, f"{key} must be passed through from deploy/.env or the shell, not written"
    with pytest.raises(ValueError, match="COMFY_PIPELINE_OUTPUT_DIR"):  # compose refuses to start without it
        merged_env(S3, {})
    given = {"COMFY_PIPELINE_OUTPUT_DIR": "s3://my-bucket/comfy", "AWS_DEFAULT_REGION": "eu-west-1"}
    code = merged_env(S3, given)
    assert code["COMFY_PIPELINE_OUTPUT_DIR"] == "s3://my-bucket/comfy"
    # Not given: left unset, so that boto3's chain goes on to a profile or a web identity.
    assert "AWS_ACCESS_KEY_ID" not in code and "AWS_ENDPOINT_URL" not in code and code["AWS_DEFAULT_REGION"]


def test_the_minio_override_creates_the_bucket_the_code_server_writes_to():
    spec = load(MINIO)
    services = spec["services"]
    code = merged_env(MINIO, {})
    assert code["COMFY_PIPELINE_OUTPUT_DIR"] == "s3://comfy-outputs/comfy"
    assert code["AWS_ENDPOINT_URL"] == "http://minio:9000"
    init = services["minio-init"]
    script = interpolate(" ".join(init["command"]), {})
    bucket_variable = init["environment"]["COMFY_PIPELINE_BUCKET"]
    assert interpolate(bucket_variable, {}) == "comfy-outputs"
    assert "mc mb --ignore-existing" in script and '"local/$COMFY_PIPELINE_BUCKET"' in script
    assert interpolate(bucket_variable, {"COMFY_PIPELINE_BUCKET": "b2"}) == "b2"
    assert merged_env(MINIO, {"COMFY_PIPELINE_BUCKET": "b2"})["COMFY_PIPELINE_OUTPUT_DIR"] == "s3://b2/comfy"
    # The code server starts once the bucket exists, MinIO once it answers.
    assert services["code-server"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "minio_data" in spec["volumes"]
    # The same user the server is given is what the code server signs with.
    server = {k: interpolate(v, {}) for k, v in services["minio"]["environment"].items()}
    assert code["AWS_ACCESS_KEY_ID"] == server["MINIO_ROOT_USER"]
    assert code["AWS_SECRET_ACCESS_KEY"] == server["MINIO_ROOT_PASSWORD"]
    # Reachable from this machine only: the console on loopback, the S3 API not published at all.
    assert all(str(port).startswith("127.0.0.1:") for port in services["minio"].get("ports", []))
    for service in services.values():  # pinned images: MinIO's moved off Docker Hub, :latest broke users
        assert "image" not in service or not service["image"].endswith(":latest")


def test_no_real_secret_is_written_in_the_compose_files():
    text = (DEPLOY / MINIO).read_text()
    assert "LOCAL DEVELOPMENT ONLY" in text  # the MinIO defaults say what they are
    for name in (BASE, S3, MINIO):
        for service_name, service in load(name)["services"].items():
            for variable, value in (service.get("environment") or {}).items():
                if not SECRET.search(variable) or value is None:
                    continue
                from_env = re.fullmatch(r"\$\{[A-Z_]+(?:(:?[?-])([^}]*))?\}", str(value))
                assert from_env, f"{name}: {service_name}: {variable} must come from the environment"
                operator, default = from_env.groups()
                if operator and operator.endswith("-") and default:  # only the local MinIO's marked defaults
                    assert name == MINIO and "local-dev" in default, (name, variable)


def test_the_minio_settings_reach_a_real_s3_server(s3_server, tmp_path):
    """The code server's environment from docker-compose.minio.yaml (endpoint swapped for the loopback server):
    the pipeline's own settings open the store it names and write to it."""
    bucket = s3_server.new_bucket()
    env = merged_env(MINIO, {"COMFY_PIPELINE_BUCKET": bucket})
    env["AWS_ENDPOINT_URL"] = s3_server.endpoint
    probe = ("from comfy_pipeline import settings; store = settings.output_store(); "
             "print(store.location); store.put_bytes('probe.txt', b'ok')")
    proc = subprocess.run([sys.executable, "-c", probe], env=clean_env(**env), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"s3://{bucket}/comfy"
    assert s3_server.read(bucket, "comfy/probe.txt") == b"ok"
    assert env["AWS_SECRET_ACCESS_KEY"] not in proc.stdout + proc.stderr


def test_kubernetes_doc_shows_the_object_store_setup():
    doc = (DEPLOY / "KUBERNETES.md").read_text()
    section = doc.split("## Outputs on an object store", 1)[1].split("\n## ", 1)[0]
    for needed in ("COMFY_PIPELINE_OUTPUT_DIR", "s3://", "ReadWriteMany", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                   "envSecrets", "AbortIncompleteMultipartUpload", '"DaysAfterInitiation": 1', *IAM_ACTIONS):
        assert needed in section, needed
    for linked in re.findall(r"\]\(([^)#]+)\)", section):  # every file it links to exists
        assert (DEPLOY / linked).exists(), linked
    assert S3 in section and MINIO in section


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker is not installed")
@pytest.mark.parametrize("override", [S3, MINIO])
def test_docker_compose_accepts_the_override(override, tmp_path):
    if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60).returncode != 0:
        pytest.skip("docker compose is not installed")
    env = clean_env(DAGSTER_POSTGRES_PASSWORD="x", COMFY_PIPELINE_OUTPUT_DIR="s3://b/p")
    proc = subprocess.run(["docker", "compose", "-f", BASE, "-f", override, "config", "-q"], cwd=DEPLOY, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_readme_has_a_short_outputs_on_s3_section_pointing_at_files_that_exist():
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Outputs on S3\n", 1)[1].split("\n## ", 1)[0]
    for needed in ("COMFY_PIPELINE_OUTPUT_DIR=s3://", "AWS_ENDPOINT_URL", "s3_endpoint_url",
                   "AWS_WEB_IDENTITY_TOKEN_FILE", "runs/<UTC time>_<run id>/{images,videos,reports}/", "manifests/",
                   "inbox/rejected/", "failures/", ".inflight/", "multipart", "AbortIncompleteMultipartUpload"):
        assert needed in section, needed
    for linked in re.findall(r"\]\(([^)#]+)\)", section):
        assert (REPO / linked).exists(), linked
    assert readme.index("\n## Main options") < readme.index("\n## Outputs on S3")
