# The agent, its policy and OPA in one image.
#
#   make image                       # wheels into build/wheels, then this build (no network)
#   docker run -p 9095:9095 pyagent:0.1.0
#
# By default `pyagent serve` starts OPA itself on loopback with the policy in
# /opt/pyagent/rego, the example inventory and the dry-run executor: the embedded default.
# In a cluster, OPA runs as a sidecar and the agent is given --opa-url
# (deploy/kubernetes/deployment.yaml). Configuration comes from PYAGENT_* variables or
# --config; state (SQLite, the audit log) lives in the volume /var/lib/pyagent.
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
    PYAGENT_INVENTORY=/opt/pyagent/examples/inventory.yaml \
    PYAGENT_STATE_DIR=/var/lib/pyagent \
    PYTHONDONTWRITEBYTECODE=1
# a numeric user, so that a pod's runAsNonRoot can check it
RUN mkdir -p /var/lib/pyagent && chown 65532:65532 /var/lib/pyagent
USER 65532:65532
WORKDIR /var/lib/pyagent
VOLUME /var/lib/pyagent
EXPOSE 9095
ENTRYPOINT ["pyagent"]
CMD ["serve", "--listen", "0.0.0.0:9095"]
