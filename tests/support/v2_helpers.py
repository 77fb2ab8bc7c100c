"""Small helpers for V2 calls made with tritonclient (a client no one here wrote)."""

from __future__ import annotations

import base64

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

SAMPLES_PER_TOKEN = 960


def http_infer(
    url: str,
    model: str,
    text: str | bytes,
    parameters: dict | None = None,
    audio_prompt: bytes | None = None,
    binary: bool = False,
):
    client = httpclient.InferenceServerClient(url.removeprefix("http://"), network_timeout=600, connection_timeout=600)
    inputs = []
    text_input = httpclient.InferInput("text", [1], "BYTES")
    text_input.set_data_from_numpy(
        np.array([text.encode() if isinstance(text, str) else text], dtype=object), binary_data=binary
    )
    inputs.append(text_input)
    if audio_prompt is not None:
        # Over REST the file travels as base64 text (see docs/predictor-api.md).
        prompt = httpclient.InferInput("audio_prompt", [1], "BYTES")
        prompt.set_data_from_numpy(np.array([base64.b64encode(audio_prompt)], dtype=object), binary_data=binary)
        inputs.append(prompt)
    outputs = [httpclient.InferRequestedOutput("audio", binary_data=binary)]
    # tritonclient sends no Content-Type; kserve needs it for an all-JSON body.
    headers = None if binary else {"Content-Type": "application/json"}
    return client.infer(model, inputs, outputs=outputs, parameters=parameters or {}, headers=headers)


def grpc_infer(url: str, model: str, text: str, parameters: dict | None = None, audio_prompt: bytes | None = None):
    client = grpcclient.InferenceServerClient(url)
    text_input = grpcclient.InferInput("text", [1], "BYTES")
    text_input.set_data_from_numpy(np.array([text.encode()], dtype=object))
    inputs = [text_input]
    if audio_prompt is not None:
        prompt = grpcclient.InferInput("audio_prompt", [1], "BYTES")
        prompt.set_data_from_numpy(np.array([audio_prompt], dtype=object))
        inputs.append(prompt)
    # kserve's gRPC parameters carry no doubles: numbers travel as strings.
    params = {k: (str(v) if isinstance(v, float) else v) for k, v in (parameters or {}).items()}
    return client.infer(model, inputs, parameters=params, client_timeout=600)
