"""Every change this project makes to code it does not own (chatterbox-tts, kserve), in one place.

Each patch is idempotent and applied at start-up by whoever needs it.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def tolerate_missing_chinese_segmenter() -> None:
    """Upstream's multilingual tokenizer downloads a Chinese word segmenter model (spacy_pkuseg) when
    it is built and only survives an ImportError; offline, the ConnectionError would stop the whole
    model from loading. Degrade to unsegmented Chinese instead, with a warning, as upstream does for
    a missing package."""
    from chatterbox.models.tokenizers.tokenizer import ChineseCangjieConverter

    original = ChineseCangjieConverter._init_segmenter
    if getattr(original, "_tolerant", False):
        return

    def init_segmenter(self):
        try:
            original(self)
        except Exception as exc:
            logger.warning("Chinese word segmentation disabled (spacy_pkuseg model unavailable: %s)", exc)
            self.segmenter = None

    init_segmenter._tolerant = True  # type: ignore[attr-defined]  # marker on the patched function: keeps the patch idempotent
    ChineseCangjieConverter._init_segmenter = init_segmenter


def refuse_malformed_rest_requests() -> None:
    """kserve 0.21 decodes a REST infer body (above all one using the binary extension) with
    unchecked indexing and reshapes: a missing key, a wrong type, a `binary_data_size` past the end,
    a shape that disagrees with the data or bytes that are not UTF-8 escape as KeyError, TypeError,
    ValueError or InferenceError, which kserve answers with a 500 carrying the exception. All of them
    are the client's input: answer 400 with a short reason instead."""
    import struct

    from kserve.errors import InferenceError, InvalidInput
    from kserve.protocol.dataplane import DataPlane

    original = DataPlane.decode_inference_request
    if getattr(original, "_tolerant", False):
        return

    def decode_inference_request(self, body, headers, model_name):
        try:
            return original(self, body, headers, model_name)
        except InvalidInput:
            raise
        except InferenceError:
            raise InvalidInput(
                "a BYTES input is not valid UTF-8: over REST send audio_prompt as base64 text (or use gRPC for raw bytes)"
            ) from None
        except KeyError as exc:
            raise InvalidInput(f"malformed inference request: the field {exc} is missing") from None
        except (TypeError, ValueError, IndexError, OverflowError, struct.error, AttributeError) as exc:
            raise InvalidInput(f"malformed inference request: {exc}") from None

    decode_inference_request._tolerant = True  # type: ignore[attr-defined]  # marker on the patched function: keeps the patch idempotent
    DataPlane.decode_inference_request = decode_inference_request
