# The agent, its policy and OPA in one image.
#
#   make image                       # wheels into build/wheels, then this build (no network)
#   docker run -p 9095:9095 pyagent:0.1.0
#
# /opt/pyagent is laid out as a checkout is, so the defaults are make run's: `pyagent serve`
# starts OPA itself on loopback with the policy in rego/, the example inventory and the
# dry-run executor, and keeps its state (SQLite, the audit log) in var/, a volume. In a
# cluster, OPA runs as a sidecar and a config file names it (deploy/kubernetes/). Only the
# policy directory is set by the environment (PYAGENT_POLICY_DIR, the policy this image
# ships): a variable would override the same key in a config file.
#
# The base images are arguments, so a registry mirror's copies can stand in for them.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG OPA_IMAGE=openpolicyagent/opa:1.22.3-static

FROM ${OPA_IMAGE} AS opa

FROM ${PYTHON_IMAGE} AS install
COPY build/wheels /wheels
RUN python3 -m venv /opt/pyagent/venv \
 && /opt/pyagent/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels pyagent

FROM ${PYTHON_IMAGE}
COPY --from=opa /opa /usr/local/bin/opa
COPY --from=install /opt/pyagent/venv /opt/pyagent/venv
COPY rego /opt/pyagent/rego
COPY examples /opt/pyagent/examples
ENV PATH=/opt/pyagent/venv/bin:$PATH \
    PYAGENT_POLICY_DIR=/opt/pyagent/rego \
    PYTHONDONTWRITEBYTECODE=1
# a numeric user, so that a pod's runAsNonRoot can check it
RUN mkdir -p /opt/pyagent/var && chown 65532:65532 /opt/pyagent/var
USER 65532:65532
WORKDIR /opt/pyagent
VOLUME /opt/pyagent/var
EXPOSE 9095
ENTRYPOINT ["pyagent"]
CMD ["serve", "--listen", "0.0.0.0:9095"]
