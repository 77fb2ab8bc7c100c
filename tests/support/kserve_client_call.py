"""Calls the predictor with kserve's own InferenceRESTClient and prints what came back as JSON.

Run in its own process: kserve's and tritonclient's generated protobuf modules both register the
`inference.*` messages and cannot be imported into one interpreter.
"""

from __future__ import annotations

import asyncio
import json
import sys

from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def call(base_url: str, model: str, text: str, parameters: dict) -> dict:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=600))
    request = InferRequest(
        model_name=model,
        infer_inputs=[InferInput(name="text", shape=[1], datatype="BYTES", data=[text])],
        parameters=parameters,
    )
    try:
        response = await client.infer(base_url, request, model_name=model)
    finally:
        await client.close()
    audio = response.outputs[0].as_numpy()
    return {"samples": int(audio.size), "dtype": str(audio.dtype), "parameters": response.parameters}


if __name__ == "__main__":
    url, model, text, params = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    print(json.dumps(asyncio.run(call(url, model, text, params))))
