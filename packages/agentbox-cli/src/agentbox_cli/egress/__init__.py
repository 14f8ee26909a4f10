"""A task's network policy: host patterns (``policy``), the egress proxy (``proxy``), served
for a task's life (``serve``)."""

SOCKET_NAME = "proxy.sock"  # in the task's egress dir, which the sandbox sees at EGRESS_DIR
# with secrets, also there: agentbox's CA certificate, and the system's bundle with it
CA_NAME = "ca.pem"
BUNDLE_NAME = "ca-bundle.pem"
