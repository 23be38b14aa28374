"""Turning a `/v1/predict` body into the input tensor, and the outputs back into the response item.

Request: `{"items":[{"content_type": ..., "encoder": "base64", "data": ...}]}` with exactly one item; the data is a
JSON array (the input tensor: one row or a batch of rows) or an image. Every failure is a `BadInput` (400, or 413 for
images over the pixel limit) with a message that says what to change.
"""
import base64
import binascii
import io
import json
import math

import numpy as np

try:  # orjson is optional: it halves JSON time on the hot path, the stdlib is the fallback
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    orjson = None

JSON_TYPE = "application/json"
IMAGE_TYPES = {"image/jpeg": "JPEG", "image/jpg": "JPEG", "image/png": "PNG", "image/gif": "GIF",
               "image/webp": "WEBP", "image/bmp": "BMP", "image/x-ms-bmp": "BMP"}
SUPPORTED_TYPES = (JSON_TYPE,) + tuple(t for t in IMAGE_TYPES if t not in ("image/jpg", "image/x-ms-bmp"))
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_INT_RANGES = {np.dtype(t): (np.iinfo(t).min, np.iinfo(t).max) for t in (np.int32, np.int64, np.uint8)}


class BadInput(ValueError):
    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status
        self.message = message


# --- JSON ------------------------------------------------------------------------------------------------------------

if orjson is not None:
    def loads(raw):
        return orjson.loads(raw)

    def dumps(obj):
        """Compact JSON bytes; numpy arrays are serialised natively and NaN/Infinity become null."""
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
else:  # pragma: no cover
    def loads(raw):
        return json.loads(raw)

    def dumps(obj):
        return json.dumps(_plain(obj), separators=(",", ":"), allow_nan=False).encode()


def _plain(obj):
    """The stdlib path: numpy -> lists, non-finite floats -> None (what orjson does)."""
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _plain(obj.item())
    return obj


def _loads_tensor(raw):
    """(value, finite): strict JSON first; the stdlib accepts the NaN/Infinity tokens many clients emit, so a NaN
    can be refused with a message about NaN rather than about syntax. `finite`: every number in the value is known
    to be finite (orjson parsed it: it refuses NaN and Infinity and a literal beyond the float range)."""
    try:
        return loads(raw), orjson is not None
    except ValueError:
        pass
    try:
        return json.loads(raw), False
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"items[0].data is not valid JSON: {exc}") from None


# --- the envelope ----------------------------------------------------------------------------------------------------

def parse_item(body):
    """(content_type, raw bytes) of the single item of a request body."""
    if not body:
        raise BadInput("A JSON body is required: {\"items\": [{\"content_type\", \"encoder\": \"base64\", \"data\"}]}")
    try:
        doc = loads(body)
    except ValueError as exc:
        raise BadInput(f"Malformed JSON body: {exc}") from None
    if not isinstance(doc, dict):
        raise BadInput("The body must be a JSON object with an `items` array")
    items = doc.get("items")
    if not isinstance(items, list):
        raise BadInput("`items` is required and must be an array holding exactly one item")
    if len(items) != 1:
        raise BadInput(f"`items` must hold exactly one item; got {len(items)}")
    item = items[0]
    if not isinstance(item, dict):
        raise BadInput("items[0] must be an object with content_type, encoder and data")
    content_type = item.get("content_type", JSON_TYPE)
    if not isinstance(content_type, str):
        raise BadInput("items[0].content_type must be a string")
    content_type = content_type.split(";", 1)[0].strip().lower()
    if content_type != JSON_TYPE and content_type not in IMAGE_TYPES:
        raise BadInput(f"Unsupported content_type {content_type!r}; supported: {', '.join(SUPPORTED_TYPES)}")
    encoder = item.get("encoder", "base64")
    if encoder != "base64":
        raise BadInput(f"Unsupported encoder {encoder!r}; items[0].encoder must be \"base64\"")
    data = item.get("data")
    if not isinstance(data, str) or not data:
        raise BadInput("items[0].data must be a non-empty base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput(f"items[0].data is not valid base64: {exc}") from None
    return content_type, raw


# --- tensors ---------------------------------------------------------------------------------------------------------

def tensor_from_json(raw, model, allow_non_finite=False):
    """The input tensor for a JSON array: a batch of rows (the input's rank) or one row (rank - 1)."""
    value, finite = _loads_tensor(raw)
    if not isinstance(value, list):
        raise BadInput("items[0].data must be a JSON array (the input tensor)")
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        raise BadInput("The input array is ragged: every row must have the same shape") from None
    kind = array.dtype.kind
    if array.size == 0:
        raise BadInput("The input array is empty")
    if kind not in "iuf":
        if kind == "b":
            raise BadInput(f"The input must hold numbers for a {model.dtype.name} tensor, not booleans")
        if kind == "O":
            raise BadInput("The input array is ragged, nests objects, or holds integers out of range")
        raise BadInput(f"The input must hold numbers for a {model.dtype.name} tensor; found {array.dtype.kind!r} "
                       "values (strings?)")
    return conform(array, model, allow_non_finite, finite)


def conform(array, model, allow_non_finite=False, finite=False):
    """Check rank, fixed dimensions and value range against the model input and cast to its dtype. `finite`: the
    caller knows every value is finite (the check for NaN and Infinity is skipped)."""
    rank = model.rank
    if array.ndim == rank - 1:
        array = array[np.newaxis, ...]
    elif array.ndim != rank:
        raise BadInput(f"Input has {array.ndim} dimensions {list(array.shape)}; the model input "
                       f"{model.input.name} has shape {model.input.shape} (send one row of {rank - 1} dimensions "
                       f"or a batch of {rank})")
    if array.shape[0] == 0:
        raise BadInput("The input holds no rows")
    for axis, size in model.fixed_dims:
        if array.shape[axis] != size:
            raise BadInput(f"Input shape {list(array.shape)} does not match the model input shape "
                           f"{model.input.shape}: dimension {axis} must be {size}")
    if model.fixed_batch is not None and array.shape[0] != model.fixed_batch:
        raise BadInput(f"The model takes batches of exactly {model.fixed_batch} row(s); got {array.shape[0]}")
    target = model.dtype
    if array.dtype.kind == "f":
        if not finite and not np.isfinite(array).all():
            if target.kind != "f":
                raise BadInput(f"NaN/Infinity cannot be given to the {target.name} input {model.input.name}")
            if not allow_non_finite:
                raise BadInput("The input holds NaN or Infinity, which this model does not accept")
        if target.kind in "iu":
            if not np.array_equal(array, np.floor(array)):
                raise BadInput(f"The input {model.input.name} is {target.name}: fractional values are not allowed")
    if target.kind in "iu":
        low, high = _INT_RANGES[target]
        if array.size and (array.min() < low or array.max() > high):
            raise BadInput(f"Values out of range for {target.name} ({low}..{high})")
    elif target == np.float16 and array.size and np.abs(array).max() > 65504:
        raise BadInput("Values out of range for float16 (|x| <= 65504)")
    return np.ascontiguousarray(array, dtype=target)


# --- images ----------------------------------------------------------------------------------------------------------

def tensor_from_image(raw, content_type, model, max_pixels):
    """Decode, RGB, resize to the input size, [0,1], ImageNet normalisation, HWC->CHW when channels-first; 4-D."""
    layout = model.image_layout
    if layout is None:
        raise BadInput(f"The model input {model.input.name} {model.input.shape} is not an image tensor "
                       "([N,3,H,W] or [N,H,W,3]); send application/json")
    from PIL import Image, UnidentifiedImageError
    try:
        image = Image.open(io.BytesIO(raw), formats=[IMAGE_TYPES[content_type], *sorted(set(IMAGE_TYPES.values()))])
    except UnidentifiedImageError:
        raise BadInput(f"items[0].data is not a {content_type} image (or any supported image format)") from None
    except Image.DecompressionBombError as exc:
        raise BadInput(f"The image is too large: {exc}", status=413) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadInput(f"The image cannot be read: {exc}") from None
    width, height = image.size
    if width * height > max_pixels or width <= 0 or height <= 0:
        raise BadInput(f"The image has {width}x{height} pixels, over the limit of {max_pixels} pixels", status=413)
    try:
        rgb = image.convert("RGB")
        target = (layout.width or width, layout.height or height)
        if rgb.size != target:
            rgb = rgb.resize(target, Image.BILINEAR)
        pixels = np.asarray(rgb)
    except Image.DecompressionBombError as exc:
        raise BadInput(f"The image is too large: {exc}", status=413) from None
    except (OSError, ValueError, SyntaxError, MemoryError) as exc:
        raise BadInput(f"The image cannot be decoded: {exc}") from None
    return image_to_tensor(pixels, layout, model.dtype)


def image_to_tensor(pixels, layout, dtype):
    """[H,W,3] uint8 -> the 4-D model tensor. uint8 models get raw pixels (normalisation needs a float input)."""
    if dtype == np.uint8:
        chw = pixels
    else:
        chw = (pixels.astype(np.float32) * np.float32(1.0 / 255.0) - IMAGENET_MEAN) / IMAGENET_STD
    if layout.channels_first:
        chw = chw.transpose(2, 0, 1)
    return np.ascontiguousarray(chw[np.newaxis, ...], dtype=dtype)


# --- outputs ---------------------------------------------------------------------------------------------------------

def output_value(value, start, stop):
    """Rows start:stop of one output (an array, or a list such as ZipMap's sequence of maps)."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return value
        return value[start:stop]
    if isinstance(value, list):
        return [_map_keys(v) for v in value[start:stop]]
    return value


def _map_keys(value):
    if isinstance(value, dict):
        return {str(k): float(v) if isinstance(v, (np.floating, float)) else v for k, v in value.items()}
    return value


def response_body(model_id, output_names, outputs, start, stop, inference_ms):
    """The `/v1/predict` response for one request's rows: outputs keyed `<name>_<index>` (docs/api.md, decision 8).
    `output_names` may also be those keys already made (`output_keys`)."""
    result = {}
    for index, name in enumerate(output_names):
        value = output_value(outputs[index], start, stop)
        if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":
            value = value.tolist()
        result[name if isinstance(output_names, OutputKeys) else f"{name}_{index}"] = value
    try:
        encoded = dumps(result)
    except TypeError:   # e.g. a non-contiguous or exotic output array: take the slow, general path
        encoded = json.dumps(_plain(result), separators=(",", ":"), allow_nan=False).encode()
    # the envelope around the base64 data, written out: the same bytes as dumps() of the whole document
    return b"".join((b'{"metadata":{"model_id":', dumps(model_id), b',"batch_size":%d,"inference_time_ms":' % (
        stop - start), dumps(round(inference_ms, 3)), _ITEM_HEAD, base64.b64encode(encoded), b'"}]}'))


_ITEM_HEAD = b'},"items":[{"content_type":"application/json","encoder":"base64","data":"'


class OutputKeys(tuple):
    """The response keys `<name>_<index>` of a model's outputs, made once."""

    def __new__(cls, output_names):
        return super().__new__(cls, (f"{name}_{index}" for index, name in enumerate(output_names)))
