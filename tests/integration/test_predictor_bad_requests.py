"""Malformed V2 requests against the real predictor process: every one is a 400 (INVALID_ARGUMENT
over gRPC) naming the problem, never a 500, and the server keeps serving. Sent raw (requests, and
tritonclient's own gRPC stubs), because a well-behaved client library refuses to build them."""

from __future__ import annotations

import json
import struct

import grpc
import numpy as np
import pytest
import requests
from tritonclient.grpc import service_pb2, service_pb2_grpc

from contract.params import defaults_for
from scripts.random_weights import TURBO_TAGS
from tests.support.v2_helpers import http_infer

pytestmark = pytest.mark.slow


def _text(**overrides) -> dict:
    return {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Hi."], **overrides}


def _bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


# Each body goes out with json.dumps' default ASCII escapes, so "\ud800" travels as JSON escapes.
JSON_CASES = {
    "shape [2] with one element": ({"inputs": [_text(shape=[2])]}, ["shape [1]", "[2]"]),
    "negative shape": ({"inputs": [_text(shape=[-2])]}, ["shape [1]"]),
    "huge shape": ({"inputs": [_text(shape=[2**70])]}, ["shape [1]"]),
    "two elements": ({"inputs": [_text(shape=[2], data=["a", "b"])]}, ["shape [1]"]),
    "no elements": ({"inputs": [_text(shape=[0], data=[])]}, ["shape [1]"]),
    "a number for text": ({"inputs": [_text(data=[5])]}, ["must hold a string"]),
    "FP32 text": ({"inputs": [_text(datatype="FP32", data=[1.0])]}, ["datatype BYTES"]),
    "unknown datatype": ({"inputs": [_text(datatype="NOPE")]}, ["datatype BYTES"]),
    "data not a list": ({"inputs": [_text(data="Hi.")]}, ["inputs.0.data"]),
    "shape of strings": ({"inputs": [_text(shape=["a"])]}, ["inputs.0.shape"]),
    "inputs missing": ({}, ["inputs"]),
    "parameters not an object": ({"inputs": [_text()], "parameters": [1]}, ["parameters"]),
    "unpaired surrogate in text": ({"inputs": [_text(data=["x\ud800y."])]}, ["text", "unpaired UTF-16 surrogate"]),
    "unpaired surrogate in voice": ({"inputs": [_text()], "parameters": {"voice": "a\udc00.wav"}}, ["surrogate"]),
    "language for another model": ({"inputs": [_text()], "parameters": {"language_id": "fr"}}, ["multilingual"]),
    "unknown language": ({"inputs": [_text()], "parameters": {"language_id": "xx"}}, ["must be one of"]),
    "a tag for a model without tags": ({"inputs": [_text(data=["Hi [laugh]."])]}, ["takes no tags", "[laugh]"]),
}


@pytest.mark.parametrize("case", JSON_CASES)
def test_malformed_json_infer_is_400(predictor, case):
    body, words = JSON_CASES[case]
    response = requests.post(
        f"{predictor.http_url}/v2/models/standard/infer",
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
        timeout=300,
    )
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    for word in words:
        assert word in message, message
    assert requests.get(f"{predictor.http_url}/v2/health/ready", timeout=10).status_code == 200


def _binary_input(size) -> dict:
    return {"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": size}}


BINARY_CASES = {
    "shape [2] with one element": ({"inputs": [{**_binary_input(7), "shape": [2]}]}, _bytes_tensor(b"Hi."), None),
    "size that is not a number": ({"inputs": [_binary_input("x")]}, _bytes_tensor(b"Hi."), None),
    "not a BYTES tensor": ({"inputs": [_binary_input(3)]}, b"\xff\xff\xff", None),
    "inputs missing": ({}, b"", None),
    "input without a name": ({"inputs": [{"shape": [1], "datatype": "BYTES", "data": ["x"]}]}, b"", None),
    "header that is not a number": ({"inputs": []}, b"", "abc"),
    "JSON that is not an object": ([1], b"", None),
    "FP32 shape mismatch": ({"inputs": [{**_binary_input(4), "datatype": "FP32", "shape": [3]}]}, bytes(4), None),
    "text not UTF-8": ({"inputs": [_binary_input(5)]}, _bytes_tensor(b"\xff"), None),
}


@pytest.mark.parametrize("case", BINARY_CASES)
def test_malformed_binary_extension_infer_is_400(predictor, case):
    header, tail, length = BINARY_CASES[case]
    raw = json.dumps(header).encode()
    response = requests.post(
        f"{predictor.http_url}/v2/models/standard/infer",
        data=raw + tail,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": length or str(len(raw)),
        },
        timeout=300,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]


def _grpc_request(shape=(1,), datatype="BYTES", contents=(b"Hi.",), raw=None) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="standard")
    tensor = request.inputs.add(name="text", datatype=datatype, shape=list(shape))
    if raw is not None:
        request.raw_input_contents.append(raw)
    elif datatype == "FP32":
        tensor.contents.fp32_contents.extend(contents)
    else:
        tensor.contents.bytes_contents.extend(contents)
    request.parameters["max_new_tokens"].int64_param = 1
    return request


GRPC_CASES = {
    "shape [2] with one element": (_grpc_request(shape=(2,)), "shape [1]"),
    "negative shape": (_grpc_request(shape=(-3,)), "shape [1]"),
    "huge shape": (_grpc_request(shape=(10**15,)), "shape [1]"),
    "no elements": (_grpc_request(contents=()), "does not match"),
    "FP32 text": (_grpc_request(datatype="FP32", contents=(1.0,)), "datatype BYTES"),
    "raw shape [2] with one element": (_grpc_request(shape=(2,), raw=_bytes_tensor(b"Hi.")), "shape [1]"),
    "raw bytes that are no tensor": (_grpc_request(raw=b"\xff\xff"), "does not match"),
    "raw length past the end": (_grpc_request(raw=struct.pack("<I", 999) + b"abc"), "does not match"),
    "text not UTF-8": (_grpc_request(contents=(b"\xff\xfe",)), "UTF-8"),
    "unpaired surrogate in text": (
        _grpc_request(contents=("x\ud800y.".encode("utf-8", "surrogatepass"),)),
        "UTF-8",
    ),
}


@pytest.mark.parametrize("case", GRPC_CASES)
def test_malformed_grpc_infer_is_invalid_argument(predictor, case):
    request, words = GRPC_CASES[case]
    with grpc.insecure_channel(predictor.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelInfer(request, timeout=300)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    assert words in error.value.details()


def test_info_declares_the_parameter_table(predictor):
    info = requests.get(f"{predictor.http_url}/v2/chatterbox/info", timeout=30).json()
    # The tags each tokenizer knows, read from it: the random turbo tokenizer carries the real one's.
    assert info["tags"] == {"standard": [], "turbo": list(TURBO_TAGS), "multilingual": []}
    declared = info["parameters"]
    assert declared["top_p"]["default"] == {"standard": 0.95, "turbo": 0.95, "multilingual": 0.95}
    assert declared["repetition_penalty"]["default"]["multilingual"] == 2.0
    assert (declared["seed"]["minimum"], declared["seed"]["maximum"]) == (0, 4294967295)
    assert declared["top_k"]["minimum"] == 0 and declared["top_k"]["used_by"] == ["turbo"]
    assert len(declared["language_id"]["choices"]) == 23


def test_an_unknown_tag_on_turbo_is_400_listing_the_known_ones(predictor):
    body = {"inputs": [_text(data=["Hi [giggle]."])]}
    response = requests.post(f"{predictor.http_url}/v2/models/turbo/infer", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("unknown tag [giggle] for the turbo model; its tags are [laugh], ")


def test_omitted_parameters_are_the_seeds_defaults(predictor):
    """No parameters and the seed's documented values give the same audio for the same seed."""
    fixed = {"seed": 5, "max_new_tokens": 3}
    omitted = http_infer(predictor.http_url, "standard", "Defaults.", fixed).as_numpy("audio")
    explicit = {**defaults_for("standard"), "top_p": 0.95, "repetition_penalty": 1.2, **fixed}
    stated = http_infer(predictor.http_url, "standard", "Defaults.", explicit).as_numpy("audio")
    np.testing.assert_array_equal(omitted, stated)
