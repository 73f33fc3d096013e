"""`ecg-ray k8s`: a KubeRay RayJob manifest for one experiment file.

    ecg-ray k8s experiments/seed_grid.yaml --storage s3://YOUR-BUCKET/ecg_ray_results --gpus 4 > rayjob.yaml
    kubectl apply -f rayjob.yaml

KubeRay's RayJob creates a RayCluster, submits the entrypoint as a Ray job, and deletes the
cluster when the job ends. The cluster here has a CPU head that runs no trial (`num-cpus: 0`:
it holds the Tune driver) and one GPU worker group that the autoscaler grows from zero pods
to `--gpus` (one GPU each) while trials wait, and shrinks back after. Pods start from Ray's
image of the release the fast path is tested on; ecg_ray itself comes as the job's
working_dir (a zip of this project in the bucket: `git archive`, see the manifest's
header) and its dependencies from the runtime environment's pip list (pyproject.toml's,
less Ray, which the image has). Results go to the bucket: a pod's disk does not outlive the
cluster. Every value a user must change is marked CHANGE. Nothing here imports Ray. The
manifest is data dumped by the YAML library, so no value can cut a line or start a comment.
"""

from __future__ import annotations

import re
import shlex
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

import yaml

from ecg_ray.errors import ConfigError
from ecg_ray.releases import RAY_RELEASE  # the fast path's tested release, defined once; the images are its

PYTHON_TAG = "py311"
HEAD_IMAGE = f"rayproject/ray:{RAY_RELEASE}-{PYTHON_TAG}"
GPU_IMAGE = f"rayproject/ray:{RAY_RELEASE}-{PYTHON_TAG}-gpu"  # Ray's CUDA image
PLACEHOLDER_STORAGE = "s3://YOUR-BUCKET/ecg_ray_results"
PLACEHOLDER_SOURCE = "s3://YOUR-BUCKET/ecg_ray/ecg_ray-src.zip"
OBJECT_STORES = ("s3", "gs", "gcs")
TTL_S = 600  # the cluster outlives its job this long (its logs can be read)


def runtime_requirements() -> list[str]:
    """pyproject.toml's runtime dependencies, as installed, less Ray (the image has the pinned release)."""
    try:
        listed = requires("ecg-ray") or []
    except PackageNotFoundError:  # a checkout that was never installed: read pyproject.toml itself
        import tomllib

        listed = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]["dependencies"]
    deps = [r for r in listed if "extra ==" not in r]
    return sorted((d.split(";")[0].strip() for d in deps if not re.match(r"ray\b", d)), key=str.lower)


NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # RFC 1123 label: a RayJob's name, also a pod name's stem
BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,220}")
KEY = re.compile(r"[A-Za-z0-9._~=+@,%/-]*")  # an object key's characters that need no quoting anywhere
SOURCE_SCHEMES = ("https", *OBJECT_STORES)  # what Ray accepts as a remote working_dir (a .zip)


def _name(text: str) -> str:
    """A Kubernetes object name made of `text` (RFC 1123: lower case, digits, '-'; at most 63)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "ecg-ray"


def check_uri(option: str, value: str, schemes: tuple[str, ...], what: str, why: str = "") -> str:
    """`value` if it is a URI of one of `schemes` with a plain bucket (host) and path; else a ConfigError
    naming the option, the value (as Python writes it: a line break shows as \\n) and the fix."""
    from ecg_ray.storage import scheme

    fix = f"give {' or '.join(s + '://BUCKET/PATH' for s in schemes)}"
    kind = scheme(value)
    if kind not in schemes:
        raise ConfigError(f"{option} {value!r} is not {what}{why}: {fix}.")
    host, _, key = value[len(kind) + 3:].partition("/")
    bad = "".join(sorted({c for c in key if not KEY.fullmatch(c)}))
    if bad:
        raise ConfigError(f"{option} {value!r}: the characters {bad!r} cannot be in its path; use letters, digits and ._~=+@,%/-.")
    if not BUCKET.fullmatch(host) or {".", ".."} & set(key.split("/")):
        raise ConfigError(f"{option} {value!r} is not {what}: {fix}, with no '.' or '..' in the path.")
    return value


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ConfigError(f"--name {name!r} is not a Kubernetes object name: use at most 63 lower-case letters, digits "
                          f"and '-', starting and ending with a letter or digit (e.g. {_name(name)!r}).")
    return name


class _Dumper(yaml.SafeDumper):
    """Safe YAML with multi-line strings as literal blocks (the nested runtime environment reads as YAML)."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))

# Comments appended to the dumped lines that are exactly these (ecg_ray's own values, never a user's).
_CHANGE = {
    "serviceAccountName: ecg-ray": "CHANGE: a service account that may read and write the bucket",
    "num-cpus: '0'": "the head holds the Tune driver and never a trial",
    "minReplicas: 0": "no GPU pod while nothing trains",
    "enableInTreeAutoscaling: true": "GPU pods are added while trials wait for one and removed when idle",
}


def _comment(line: str, gpus: int, source: str) -> str:
    text = line.strip()
    note = _CHANGE.get(text)
    if text == f"maxReplicas: {gpus}":
        note = "CHANGE: the most GPU pods (one trial per GPU; resources.gpus_per_worker packs more)"
    elif text == f"working_dir: {source}":
        note = "CHANGE: where step 1 put the zip"
    elif text == "resources:":
        note = "CHANGE: the pod's CPUs, memory (and GPU) for the driver or a trial's data"
    elif text.startswith("rayVersion:"):
        note = "the image's; the same release as pyproject.toml allows and cluster*.yaml pin"
    return f"{line}  # {note}" if note else line


def manifest(experiment: str, storage: str = PLACEHOLDER_STORAGE, gpus: int = 4, source: str = PLACEHOLDER_SOURCE,
             name: str | None = None, project: str | Path = ".") -> str:
    """The RayJob manifest (YAML with comments) that runs `ecg-ray tune EXPERIMENT --gpu --storage STORAGE`.

    Every value is checked first (the URIs' schemes and characters, the name, the GPU count, the
    experiment file, which must lie in `project`: the working_dir the job receives). The manifest is
    built as data and written by the YAML library, the entrypoint quoted with shlex, so no value can
    end a line or start a comment; a test loads it for hostile values.
    """
    from ecg_ray.config import load_experiment
    from ecg_ray.models import needed_plugins

    check_uri("--storage", storage, OBJECT_STORES, "an object store URI",
              " (on Kubernetes results must go to object storage: a pod's disk is gone with its cluster)")
    check_uri("--source", source, SOURCE_SCHEMES, "the URI of the project's zip", " (the job's working_dir)")
    if not source.endswith(".zip"):
        raise ConfigError(f"--source {source!r}: Ray takes a remote working_dir as a .zip file; give the URI of the "
                          "`git archive --format=zip` of the project.")
    if name is not None:
        check_name(name)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= 1000:
        raise ConfigError(f"--gpus {gpus}: the most GPU worker pods (one GPU each) must be 1..1000.")
    root = Path(project).resolve()
    path = Path(experiment).resolve()
    if not path.is_relative_to(root):
        raise ConfigError(f"{experiment} is outside the project folder {root}: the job runs in a zip of that folder, so "
                          "put the experiment file in it (experiments/ is the place).")
    cfg = load_experiment(path, storage_path=storage)
    rel = path.relative_to(root).as_posix()
    if "\n" in rel or "\r" in rel:
        raise ConfigError(f"{experiment!r}: a file name with a line break cannot be an entrypoint; rename the file.")
    job = name or _name(f"ecg-ray-{cfg.name}")
    plugins = needed_plugins(cfg.search_space)
    plugin_step = (f"#   4. This experiment's models come from the plug-in package(s) {', '.join(plugins)}: install\n"
                   "#      them in both images (or add them to the runtime_env's pip list below).\n") if plugins else ""
    folder = f"{storage.rstrip('/')}/{cfg.name}"
    runtime_env = yaml.dump({"working_dir": source, "pip": runtime_requirements()}, Dumper=_Dumper, sort_keys=False)
    doc = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": job},
        "spec": {
            "entrypoint": shlex.join(["python", "-m", "ecg_ray", "tune", rel, "--gpu", "--storage", storage]),
            "runtimeEnvYAML": "\n".join(_comment(l, gpus, source) for l in runtime_env.splitlines()) + "\n",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": TTL_S,
            "rayClusterSpec": {
                "rayVersion": RAY_RELEASE,
                "enableInTreeAutoscaling": True,
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0"},
                    "template": {"spec": {"serviceAccountName": "ecg-ray", "containers": [{
                        "name": "ray-head", "image": HEAD_IMAGE,
                        "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"cpu": "4", "memory": "16Gi"}},
                    }]}},
                },
                "workerGroupSpecs": [{
                    "groupName": "gpu", "replicas": 0, "minReplicas": 0, "maxReplicas": gpus, "idleTimeoutSeconds": 300,
                    "rayStartParams": {},
                    "template": {"spec": {"serviceAccountName": "ecg-ray", "containers": [{
                        "name": "ray-worker", "image": GPU_IMAGE,
                        "resources": {"requests": {"nvidia.com/gpu": 1, "cpu": "8", "memory": "32Gi"},
                                      "limits": {"nvidia.com/gpu": 1, "cpu": "8", "memory": "32Gi"}},
                    }]}},
                }],
            },
        },
    }
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=10_000)
    # Values were checked to hold no line break, so each sits on its own line of the header as given.
    header = f"""# A KubeRay RayJob that runs {rel} on a RayCluster of its own, generated by
#   ecg-ray k8s {shlex.join([rel, '--storage', storage, '--gpus', str(gpus)])}
# KubeRay creates the cluster, submits the entrypoint as a Ray job, and deletes the
# cluster {TTL_S} s after the job ends. Before `kubectl apply`:
#   1. The project as the job's working_dir: from a checkout,
#        git archive --format=zip -o ecg_ray-src.zip HEAD && aws s3 cp ecg_ray-src.zip {shlex.quote(source)}
#      (or pass `--source` an https:// URL of such a zip, e.g. a release archive of your fork)
#   2. The bucket: the pods' service account (CHANGE below) needs read access to the zip and
#      write access to {storage} (IRSA on EKS, Workload Identity on GKE); no key is in this file.
#   3. Every other CHANGE: GPU count, pod sizes; add a nodeSelector for your GPU nodes to the
#      gpu group's pod spec (e.g. cloud.google.com/gke-accelerator: nvidia-l4).
{plugin_step}# Then
#   kubectl apply -f rayjob.yaml
#   kubectl get rayjob {job} -w      # Initializing -> Running -> Complete
#   kubectl logs -f job/{job}        # the job's output: epochs, then the ranked table
# The tables and the HTML page land in {folder}/report/
# (`ecg-ray report {folder}` rebuilds them anywhere); resume an interrupted run with the same
# manifest and `--resume {folder}` in place of the experiment file.
"""
    return header + "\n".join(_comment(l, gpus, source) for l in body.splitlines()) + "\n"
