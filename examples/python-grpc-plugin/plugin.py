#!/usr/bin/env python3
"""A GoatKit plugin in Python: everything it needs is the .proto files.

Generate the gRPC code next to this file, then let the host start it:

    python3 -m grpc_tools.protoc -I ../../proto --python_out=. --grpc_python_out=. \
        ../../proto/goatkit/plugin/v1/plugin.proto ../../proto/goatkit/plugin/v1/host.proto

The host starts it with GOATKIT_PLUGIN=goatkit-v1, the path of its host socket and a token in
the environment. It listens on a Unix socket of its own, prints the handshake line
`1|1|unix|<socket>|grpc`, registers, answers calls and calls back into the host. Whatever it
prints after the handshake line (stdout and stderr, from the start) ends up in its plugin log.

Host errors arrive as a `google.rpc.Status` in the call's trailing metadata with a
`goatkit.plugin.v1.HostErrorDetail` packed as `Any`: grpcio-status decodes them.
"""

import json
import os
import sys
import tempfile
import threading
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from goatkit.plugin.v1 import host_pb2, host_pb2_grpc, plugin_pb2, plugin_pb2_grpc  # noqa: E402

if os.environ.get("GOATKIT_PLUGIN") != "goatkit-v1":
    print("This is a GoatKit plugin: it is started by the GoatKit host, not by hand.", file=sys.stderr)
    sys.exit(1)

TOKEN = os.environ["GOATKIT_HOST_TOKEN"]
HOST_SOCKET = os.environ["GOATKIT_HOST_SOCKET"]


class Plugin(plugin_pb2_grpc.PluginServiceServicer):
    def __init__(self, stop):
        self.stop = stop
        self.host = None
        self.config = {}

    def metadata(self):
        return [("x-goatkit-token", TOKEN)]

    def Register(self, request, context):
        print("registering", file=sys.stderr, flush=True)
        registration = plugin_pb2.Registration(
            name="python-hello",
            version="0.1.0",
            description="A GoatKit plugin written in Python",
            routes=[plugin_pb2.Route(method="GET", path="/api/plugins/python-hello/remember", handler="remember")],
        )
        return plugin_pb2.RegisterResponse(registration=registration)

    def Init(self, request, context):
        # host_version, plugin_dir and work_dir (absolute paths as this process sees them).
        self.config = dict(request.config)
        # gRPC C-core would send the socket path as the HTTP/2 authority, which the host's
        # HTTP/2 server rejects as malformed: name a plain authority instead.
        channel = grpc.insecure_channel("unix:" + HOST_SOCKET, options=[("grpc.default_authority", "localhost")])
        self.host = host_pb2_grpc.HostServiceStub(channel)
        return plugin_pb2.InitResponse()

    def Call(self, request, context):
        args = json.loads(request.args_json or b"{}")
        if request.function == "remember":
            # Store a value in the plugin's cache, read it back and log, all through the host.
            value = args.get("value", "nothing").encode()
            self.host.CacheSet(host_pb2.CacheSetRequest(key="memory", value=value, ttl_seconds=60), metadata=self.metadata())
            found = self.host.CacheGet(host_pb2.CacheGetRequest(key="memory"), metadata=self.metadata())
            self.host.Log(
                host_pb2.LogRequest(level=host_pb2.LOG_LEVEL_INFO, message="remembered " + found.value.decode()),
                metadata=self.metadata(),
            )
            result = {"remembered": found.value.decode(), "found": found.found, "language": "python"}
            return plugin_pb2.CallResponse(result_json=json.dumps(result).encode())
        if request.function == "config":
            work_dir = self.config.get("work_dir", "")
            writable = bool(work_dir) and os.access(work_dir, os.W_OK)
            result = {"config": self.config, "plugin_dir_is_cwd": self.config.get("plugin_dir") == os.getcwd(), "work_dir_writable": writable}
            return plugin_pb2.CallResponse(result_json=json.dumps(result).encode())
        if request.function == "forbidden":
            # A host call the policy refuses comes back as a gRPC error with the reason, and the
            # exact error as a HostErrorDetail inside a google.rpc.Status.
            try:
                self.host.HttpRequest(host_pb2.OutboundHttpRequest(method="GET", url="https://example.com/"), metadata=self.metadata())
                return plugin_pb2.CallResponse(result_json=json.dumps({"outcome": "allowed"}).encode())
            except grpc.RpcError as error:
                outcome = "%s: %s" % (error.code().name, error.details())
                result = {"outcome": outcome, "detail": host_error_detail(error)}
                return plugin_pb2.CallResponse(result_json=json.dumps(result).encode())
        if request.function == "pass_on":
            # A host error passed on as the call's own status keeps its kind at the host (a rate
            # limit is answered HTTP 429 there, a denial 403, and so on).
            try:
                self.host.HttpRequest(host_pb2.OutboundHttpRequest(method="GET", url="https://example.com/"), metadata=self.metadata())
                return plugin_pb2.CallResponse(result_json=b'{"outcome": "allowed"}')
            except grpc.RpcError as error:
                context.abort_with_status(rpc_status.to_status(rpc_status.from_call(error)))
        failure = plugin_pb2.Failure(code="unknown_function", message="no function `%s`" % request.function)
        return plugin_pb2.CallResponse(failure=failure)

    def Shutdown(self, request, context):
        threading.Timer(0.05, self.stop.set).start()
        return plugin_pb2.ShutdownResponse()

    def Health(self, request, context):
        return plugin_pb2.HealthResponse(healthy=True)


def host_error_detail(error):
    """The HostErrorDetail of a failed host call, as a dict (None when it carries none)."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(host_pb2.HostErrorDetail.DESCRIPTOR):
            unpacked = host_pb2.HostErrorDetail()
            detail.Unpack(unpacked)
            return {
                "type_url": detail.type_url,
                "code": status.code,
                "kind": unpacked.kind,
                "message": unpacked.message,
                "permission": unpacked.permission,
                "limit": unpacked.limit,
                "retry_after_ms": unpacked.retry_after_ms,
            }
    return None


def main():
    socket = os.path.join(tempfile.mkdtemp(prefix="python-plugin-"), "plugin.sock")
    stop = threading.Event()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    plugin_pb2_grpc.add_PluginServiceServicer_to_server(Plugin(stop), server)
    server.add_insecure_port("unix:" + socket)
    server.start()
    print("1|1|unix|%s|grpc" % socket, flush=True)
    # Printed before the host has even called Register: still part of the plugin's log.
    print("listening on %s" % socket, flush=True)
    stop.wait()
    server.stop(grace=1)


if __name__ == "__main__":
    main()
