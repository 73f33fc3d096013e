"""The Ray releases ecg_ray is tested with: written here once. The fast path runs only on these
(ecg_ray.tuning.fast_path); the cluster files pin the last one, the KubeRay manifest's images are
its, and tests/test_docs.py checks every other file that names a release (cluster*.yaml, k8s/,
the README, docs/) against it. Nothing here imports Ray.
"""

TESTED_RAY = ("2.60.0",)  # the releases the fast path was tested with, the whole suite on each
RAY_RELEASE = TESTED_RAY[-1]  # the one the cluster files, the images and the docs name
