from __future__ import annotations

import asyncio
import json
import os
import socket
import sys

import pytest

from pymesh.samples import httpbin
from pymesh.samples.sleep import curl, parse_args


@pytest.fixture
async def bin_url(mesh):
    return await mesh.add("httpbin:8000", httpbin.make_app(httpbin.HttpbinConfig()))


async def test_through_the_proxy_by_service_name(mesh, bin_url):
    result = await curl(["-s", "-H", "x-custom: yes", "http://httpbin:8000/headers"], env=mesh.env)
    assert result.exit_code == 0 and result.http_code == 200
    assert json.loads(result.stdout)["headers"]["X-Custom"] == "yes"
    seen = mesh.proxy.to("httpbin:8000")[0]
    assert seen.target == "http://httpbin:8000/headers"
    assert seen.headers["x-custom"] == "yes"
    assert "accept-encoding" not in seen.headers
    assert seen.headers["accept"] == "*/*"


async def test_write_out_http_code(mesh, bin_url):
    argv = ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://httpbin:8000/status/418"]
    result = await curl(argv, env=mesh.env)
    assert (result.exit_code, result.stdout) == (0, b"418")
    result = await curl(
        ["-so", "/dev/null", "-w", "%{http_code}\\n", "http://httpbin:8000/status/503"],
        env={"http_proxy": mesh.proxy_url},
    )
    assert result.stdout == b"503\n"
    result = await curl(["-s", "-w", " %{http_code}", "http://nothing:1/"], env=mesh.env)
    assert result.stdout == b"no healthy upstream 503"


async def test_direct_without_proxy(mesh, bin_url):
    result = await curl(["-s", "-w", "%{http_code}", f"{bin_url}/ip"], env={})
    assert result.stdout.endswith(b"200")
    assert not mesh.proxy.seen
    bypass = {"HTTP_PROXY": mesh.proxy_url, "NO_PROXY": "localhost,127.0.0.0/8"}
    result = await curl(["-s", f"{bin_url}/get"], env=bypass)
    assert result.http_code == 200 and not mesh.proxy.seen


async def test_method_data_host_and_include(mesh, bin_url):
    result = await curl(
        ["-s", "-X", "PUT", "-d", "a=1", "-d", "b=2", "http://httpbin:8000/anything"],
        env=mesh.env,
    )
    body = json.loads(result.stdout)
    assert body["method"] == "PUT" and body["form"] == {"a": "1", "b": "2"}
    result = await curl(
        ["-s", "-d", '{"x":1}', "-H", "Content-Type: application/json", "http://httpbin:8000/post"],
        env=mesh.env,
    )
    assert json.loads(result.stdout)["json"] == {"x": 1}
    result = await curl(
        ["-s", "-i", "-H", "Host: httpbin:8000", f"http://{mesh.proxy_url[7:]}/status/201"],
        env={},
    )
    assert result.stdout.startswith(b"HTTP/1.1 201 Created\r\n")
    assert mesh.proxy.seen[-1].authority == "httpbin:8000"
    result = await curl(["-sI", "http://httpbin:8000/get"], env=mesh.env)
    assert result.stdout.startswith(b"HTTP/1.1 200 OK\r\n") and result.stdout.endswith(b"\r\n\r\n")
    result = await curl(
        ["-s", "-H", "User-Agent:", "-H", "x-e;", "http://httpbin:8000/get"], env=mesh.env
    )
    seen = mesh.proxy.seen[-1].headers
    assert "user-agent" not in seen and seen["x-e"] == ""


async def test_verbose_fail_and_errors(mesh, bin_url):
    result = await curl(["-v", "-s", "http://httpbin:8000/get"], env=mesh.env)
    assert "> GET http://httpbin:8000/get HTTP/1.1" in result.stderr
    assert "< HTTP/1.1 200 OK" in result.stderr
    result = await curl(["-f", "http://httpbin:8000/status/500"], env=mesh.env)
    assert result.exit_code == 22 and result.stdout == b""
    assert "returned error: 500" in result.stderr
    result = await curl(
        ["-s", "-m", "0.3", "-w", "%{http_code}", "http://httpbin:8000/delay/2"], env=mesh.env
    )
    assert (result.exit_code, result.stdout, result.stderr) == (28, b"000", "")
    with socket.socket() as s:
        s.bind(("127.0.0.119", 0))
        port = s.getsockname()[1]
    result = await curl(["-w", "%{http_code}", f"http://127.0.0.119:{port}/"], env={})
    assert (result.exit_code, result.stdout) == (7, b"000")
    assert result.stderr.startswith("curl: (7) Failed to connect")
    result = await curl(["--bogus"], env={})
    assert result.exit_code == 2


def test_parse_args_accepts_curl_spellings():
    opts = parse_args(["-sS", "-o", "/dev/null", "--max-time", "2", "-XPOST", "http://x/", "-v"])
    assert (opts.silent, opts.show_error, opts.verbose) == (True, True, True)
    assert (opts.method, opts.max_time, opts.output) == ("POST", 2.0, "/dev/null")


async def test_command_line_through_the_proxy(mesh, bin_url):
    env = {**os.environ, "HTTP_PROXY": mesh.proxy_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pymesh.samples.sleep",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://httpbin:8000/status/418",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=15)
    assert proc.returncode == 0, err
    assert out == b"418"


async def test_data_from_files_and_output_to_a_file(mesh, bin_url, tmp_path):
    src = tmp_path / "body.txt"
    src.write_bytes(b"line1\nline2\n")
    out = tmp_path / "out.json"
    plain = ["-H", "Content-Type: text/plain", "http://httpbin:8000/anything"]
    for option, sent in (("-d", "line1line2"), ("--data-binary", "line1\nline2\n")):
        result = await curl(["-s", option, f"@{src}", "-o", str(out), *plain], env=mesh.env)
        assert result.exit_code == 0 and result.stdout == b""
        assert json.loads(out.read_bytes())["data"] == sent
    result = await curl(["-s", "--data-raw", "@x", *plain], env=mesh.env)
    assert json.loads(result.stdout)["data"] == "@x"
    result = await curl(["-s", "-d", f"@{tmp_path / 'missing'}", *plain], env=mesh.env)
    assert result.exit_code == 26
