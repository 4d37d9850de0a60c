# skewguard's images, one target per role (podman needs `--format docker` to keep the HEALTHCHECK):
#
#   podman build --format docker --target gateway -t skewguard:serve .      serving only (the default)
#   podman build --format docker --target trainer -t skewguard:trainer .    train, monitor, retrain
#   podman build --format docker --target baked -t skewguard:baked .        serving, state baked in
#
# `gateway` runs `skewguard serve`, or a model's `bentoml serve`; it has none of the training,
# monitoring or Prefect dependencies (pyproject.toml's base list). `trainer` adds the `train`
# and `monitor` extras and runs `skewguard train`, `monitor`, `retrain`. docs/deployment.md
# shows how to run them, with the state mounted read-only.
# `runtime`/`trainer` build on their dependency stage rather than `COPY --from` its venv:
# buildah copies and hashes a stage's files for every `COPY --from`, even a cached one, which
# cost minutes per rebuild for a venv this size.

# Only the dependency lists key the slow layers below: a new dev tool or version number in
# pyproject.toml changes this stage's output, not the lists.
FROM python:3.11-slim AS requirements
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c 'import tomllib; p = tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]; \
open("/tmp/serve.txt", "w").write("\n".join(p["dependencies"])); \
open("/tmp/train.txt", "w").write("\n".join(p["optional-dependencies"]["train"] + p["optional-dependencies"]["monitor"]))'

FROM python:3.11-slim AS serve-deps
ENV LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=requirements /tmp/serve.txt /tmp/train.txt /tmp/
# The pip cache survives between builds (a dependency change downloads only what changed);
# setuptools and wheel stay in the venv so the project installs editable without network.
# Then the optimized bytecode: `skewguard serve` runs under python -O (Feast's typeguard
# checks cost ~2.5 s of start-up otherwise; see skewguard/entry.py). One file of `whenever`
# is Python 3.12 syntax and fails to compile; 3.11 never imports it.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade "pip>=24" "setuptools>=77" "wheel>=0.43" \
    && /opt/venv/bin/pip install -r /tmp/serve.txt \
    && { /opt/venv/bin/python -O -m compileall -q -j 0 /opt/venv/lib > /dev/null || true; } \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/skewguard --shell /usr/sbin/nologin skewguard \
    && install -d -o skewguard -g skewguard /var/lib/skewguard /var/lib/skewguard/log
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SKEWGUARD_HOME=/var/lib/skewguard \
    BENTOML_HOME=/var/lib/skewguard/bentoml \
    SKEWGUARD_HOST=0.0.0.0 \
    SKEWGUARD_PORT=8000 \
    DO_NOT_TRACK=1 \
    BENTOML_DO_NOT_TRACK=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false

FROM serve-deps AS trainer-deps
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /tmp/serve.txt -r /tmp/train.txt \
    && { python -O -m compileall -q -j 0 /opt/venv/lib > /dev/null || true; }

# The sources stay owned by root: the service can read them, not change them. Editable,
# because the packages are symlinks in skewguard/ to the folders beside them (and the
# examples ship with them: `skewguard examples copy` makes a writable copy).
FROM trainer-deps AS trainer
COPY pyproject.toml README.md /app/
COPY skewguard /app/skewguard
COPY bentos /app/bentos
COPY featurestore /app/featurestore
COPY predictionlog /app/predictionlog
COPY gateway /app/gateway
COPY monitoring /app/monitoring
COPY pipeline /app/pipeline
COPY examples /app/examples
RUN pip install --no-deps --no-build-isolation --no-cache-dir -e /app
WORKDIR /app
USER 10001:10001
CMD ["skewguard", "--help"]

FROM serve-deps AS runtime
COPY pyproject.toml README.md /app/
COPY skewguard /app/skewguard
COPY bentos /app/bentos
COPY featurestore /app/featurestore
COPY predictionlog /app/predictionlog
COPY gateway /app/gateway
COPY monitoring /app/monitoring
COPY pipeline /app/pipeline
COPY examples /app/examples
RUN pip install --no-deps --no-build-isolation --no-cache-dir -e /app
WORKDIR /app
USER 10001:10001
# The prediction log in a folder of its own (a volume): the model store and the Feast state
# can then be mounted read-only beside it.
ENV SKEWGUARD_LOG_URL=sqlite:////var/lib/skewguard/log/predictions.db
EXPOSE 8000
# Docker runs this by itself; podman only through systemd timers (docs/deployment.md shows
# `podman healthcheck run` and the probes Kubernetes uses instead).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen(f'http://127.0.0.1:{os.environ[\"SKEWGUARD_PORT\"]}/healthz', timeout=4)"]
CMD ["skewguard", "serve"]

# Model store (bentoml/models, bentoml/cascade_aliases.json) and Feast state (feast/*/) of the
# build context's .skewguard/; .dockerignore lets nothing else of it in.
FROM runtime AS baked
COPY --chown=skewguard:skewguard .skewguard/ /var/lib/skewguard/

FROM runtime AS gateway
