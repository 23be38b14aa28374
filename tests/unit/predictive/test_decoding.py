"""Request decoding and image preprocessing, checked against independent numpy computations."""
import base64
import io
import json

import numpy as np
import pytest

from foundry_inference.apps.predictive import decoding
from foundry_inference.apps.predictive.decoding import BadInput
from foundry_inference.apps.predictive.engine import INPUT_DTYPES, ImageLayout, TensorInfo, image_layout_for

pytestmark = pytest.mark.unit


class FakeModel:
    """Just the attributes decoding reads."""

    def __init__(self, shape, type_name="tensor(float)"):
        self.input = TensorInfo("x", type_name, list(shape))
        self.dtype = INPUT_DTYPES[type_name]
        self.image_layout = image_layout_for(shape)
        self.fixed_dims = tuple((a, d) for a, d in enumerate(shape) if a > 0 and isinstance(d, int) and d > 0)
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.rank = len(shape)


def tensor(value, model, **kw):
    return decoding.tensor_from_json(json.dumps(value).encode(), model, **kw)


def test_one_row_gets_a_batch_axis_and_a_batch_is_kept():
    model = FakeModel([None, 4])
    one = tensor([1, 2, 3, 4], model)
    assert one.shape == (1, 4) and one.dtype == np.float32
    batch = tensor([[1, 2, 3, 4], [5, 6, 7, 8]], model)
    assert batch.shape == (2, 4) and batch.flags.c_contiguous


def test_dynamic_dimensions_accept_any_size():
    model = FakeModel(["N", "T", 3])
    assert tensor([[[1, 2, 3]] * 5], model).shape == (1, 5, 3)
    with pytest.raises(BadInput, match="dimension 2 must be 3"):
        tensor([[[1, 2]]], model)


def test_fixed_batch_is_enforced():
    model = FakeModel([1, 4])
    assert tensor([1, 2, 3, 4], model).shape == (1, 4)
    with pytest.raises(BadInput, match="exactly 1 row"):
        tensor([[1, 2, 3, 4], [1, 2, 3, 4]], model)


@pytest.mark.parametrize("type_name,value,needle", [
    ("tensor(int64)", [[1.5, 2, 3, 4]], "fractional"),
    ("tensor(int32)", [[2 ** 40, 1, 1, 1]], "out of range for int32"),
    ("tensor(uint8)", [[256, 1, 1, 1]], "out of range for uint8"),
    ("tensor(uint8)", [[-1, 1, 1, 1]], "out of range for uint8"),
    ("tensor(float16)", [[1e6, 1, 1, 1]], "float16"),
    ("tensor(int64)", [[2 ** 70, 1, 1, 1]], "out of range"),
])
def test_values_must_fit_the_dtype(type_name, value, needle):
    with pytest.raises(BadInput, match=needle):
        tensor(value, FakeModel([None, 4], type_name))


def test_integral_floats_are_accepted_for_integer_inputs():
    out = tensor([[1.0, 2.0, 3.0, 255.0]], FakeModel([None, 4], "tensor(uint8)"))
    assert out.dtype == np.uint8 and out.tolist() == [[1, 2, 3, 255]]


def test_nan_and_infinity():
    raw = b"[[NaN, 1, 2, Infinity]]"
    with pytest.raises(BadInput, match="NaN/Infinity cannot be given to the int64"):
        decoding.tensor_from_json(raw, FakeModel([None, 4], "tensor(int64)"))
    with pytest.raises(BadInput, match="does not accept"):
        decoding.tensor_from_json(raw, FakeModel([None, 4]))
    out = decoding.tensor_from_json(raw, FakeModel([None, 4]), allow_non_finite=True)
    assert np.isnan(out[0, 0]) and np.isinf(out[0, 3])


@pytest.mark.parametrize("raw", [b"[[1e999, 1, 2, 3]]", b"[[1, 2, 3, -" + b"9" * 400 + b".5]]"])
def test_a_literal_beyond_the_float_range_is_infinity_and_refused(raw):
    # the fast JSON parser refuses these literals; the fallback reads them as Infinity, which must still be checked
    with pytest.raises(BadInput, match="does not accept"):
        decoding.tensor_from_json(raw, FakeModel([None, 4]))
    assert np.isinf(decoding.tensor_from_json(raw, FakeModel([None, 4]), allow_non_finite=True)).any()


def test_parse_item_defaults_and_errors():
    data = base64.b64encode(b"[1]").decode()
    assert decoding.parse_item(json.dumps({"items": [{"data": data}]}).encode()) == ("application/json", b"[1]")
    ctype, _ = decoding.parse_item(json.dumps({"items": [{"data": data, "content_type": "image/PNG; x=y"}]}).encode())
    assert ctype == "image/png"
    with pytest.raises(BadInput, match="non-empty base64"):
        decoding.parse_item(json.dumps({"items": [{"data": 12}]}).encode())
    with pytest.raises(BadInput, match="Unsupported content_type 'text/plain'"):
        decoding.parse_item(json.dumps({"items": [{"data": data, "content_type": "text/plain"}]}).encode())


# --- images ----------------------------------------------------------------------------------------------------------

def encode(pixels, fmt="PNG"):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def reference(pixels, channels_first):
    """Independent float64 numpy computation of the contract's preprocessing."""
    x = pixels.astype(np.float64) / 255.0
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    if channels_first:
        x = np.transpose(x, (2, 0, 1))
    return x[None]


@pytest.mark.parametrize("shape,channels_first", [(["N", 3, 16, 24], True), (["N", 16, 24, 3], False)])
def test_image_preprocessing_matches_numpy_reference(shape, channels_first):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
    model = FakeModel(shape)
    out = decoding.tensor_from_image(encode(pixels), "image/png", model, 10_000)
    assert out.shape == tuple([1] + shape[1:]) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference(pixels, channels_first), atol=1e-5)


def test_grayscale_and_palette_images_become_rgb():
    from PIL import Image
    gray = np.arange(16 * 24, dtype=np.uint8).reshape(16, 24)
    buf = io.BytesIO()
    Image.fromarray(gray, mode="L").save(buf, format="PNG")
    out = decoding.tensor_from_image(buf.getvalue(), "image/png", FakeModel(["N", 3, 16, 24]), 10_000)
    np.testing.assert_allclose(out, reference(np.repeat(gray[:, :, None], 3, axis=2), True), atol=1e-5)


def test_resize_to_the_model_input():
    pixels = np.zeros((40, 40, 3), dtype=np.uint8)
    pixels[:, 20:] = (10, 200, 30)
    out = decoding.tensor_from_image(encode(pixels), "image/png", FakeModel(["N", 3, 20, 20]), 10_000)
    assert out.shape == (1, 3, 20, 20)
    np.testing.assert_allclose(out[0, :, :, :8], reference(np.zeros((20, 8, 3), np.uint8), True)[0], atol=1e-5)
    right = np.broadcast_to(np.array([10, 200, 30], np.uint8), (20, 8, 3))
    np.testing.assert_allclose(out[0, :, :, 12:], reference(right, True)[0], atol=1e-5)


def test_dynamic_spatial_size_keeps_the_image_size():
    pixels = np.full((7, 9, 3), 128, dtype=np.uint8)
    out = decoding.tensor_from_image(encode(pixels), "image/png", FakeModel(["N", 3, "H", "W"]), 10_000)
    assert out.shape == (1, 3, 7, 9)


def test_uint8_image_models_get_raw_pixels():
    pixels = np.random.default_rng(2).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    out = decoding.tensor_from_image(encode(pixels), "image/png", FakeModel(["N", 8, 8, 3], "tensor(uint8)"), 1000)
    np.testing.assert_array_equal(out[0], pixels)


def test_image_limits_and_garbage():
    model = FakeModel(["N", 3, 8, 8])
    big = encode(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(BadInput) as info:
        decoding.tensor_from_image(big, "image/png", model, 5_000)
    assert info.value.status == 413
    with pytest.raises(BadInput, match="not a image/jpeg image"):
        decoding.tensor_from_image(b"not an image at all", "image/jpeg", model, 5_000)
    truncated = encode(np.zeros((50, 50, 3), np.uint8), "JPEG")[:100]
    with pytest.raises(BadInput):
        decoding.tensor_from_image(truncated, "image/jpeg", model, 5_000)


def test_image_layout_detection():
    assert image_layout_for([None, 3, 224, 224]) == ImageLayout(True, 224, 224)
    assert image_layout_for(["N", 299, 299, 3]) == ImageLayout(False, 299, 299)
    assert image_layout_for([None, 4]) is None
    assert image_layout_for([None, 1, 28, 28]) is None


def test_response_body_keys_are_name_and_index():
    outputs = [np.array([1, 2]), np.array([[0.1, 0.9], [0.8, 0.2]], np.float32), np.array([np.nan, 1.0])]
    body = json.loads(decoding.response_body("m", ("label", "probabilities", "score"), outputs, 1, 2, 0.1234))
    assert body["metadata"] == {"model_id": "m", "batch_size": 1, "inference_time_ms": 0.123}
    item = body["items"][0]
    assert item["content_type"] == "application/json" and item["encoder"] == "base64"
    out = json.loads(base64.b64decode(item["data"]))
    assert out["label_0"] == [2]
    assert out["probabilities_1"] == [[pytest.approx(0.8), pytest.approx(0.2)]]
    assert out["score_2"] == [1.0]


def test_response_body_handles_strings_and_maps():
    outputs = [np.array(["setosa", "virginica"], dtype=object), [{0: 0.5, 1: 0.5}, {0: 0.1, 1: 0.9}]]
    body = json.loads(decoding.response_body("m", ("label", "probs"), outputs, 0, 2, 1.0))
    out = json.loads(base64.b64decode(body["items"][0]["data"]))
    assert out == {"label_0": ["setosa", "virginica"], "probs_1": [{"0": 0.5, "1": 0.5}, {"0": 0.1, "1": 0.9}]}
