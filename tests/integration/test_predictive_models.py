"""Real models through the real HTTP server: every answer equals scikit-learn's own prediction (or onnxruntime's
on an independently preprocessed tensor), under both HTTP front ends."""
import numpy as np
import onnxruntime as ort
import pytest
import requests

from tests.support import models
from tests.unit.predictive.harness import PredictiveServer, body_for, outputs_of

pytestmark = pytest.mark.integration

FRONTENDS = ["httptools", "tornado"]


def predict(server, array, content_type="application/json"):
    response = requests.post(server.url("/v1/predict"), json=body_for(array, content_type), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module", params=FRONTENDS)
def frontend(request):
    return request.param


@pytest.mark.parametrize("build", [models.iris_logreg, models.digits_mlp, models.digits_forest],
                         ids=["iris-logreg", "digits-mlp", "digits-forest"])
def test_classifiers_match_scikit_learn(build, frontend):
    built = build()
    X = built.X
    with PredictiveServer(built.path, frontend=frontend) as server:
        # one row at a time
        for row, label, proba in zip(X[:10], built.estimator.predict(X[:10]), built.estimator.predict_proba(X[:10]),
                                    strict=True):
            answer = predict(server, row)
            out = outputs_of(answer)
            assert set(out) == {"label_0", "probabilities_1"}
            assert out["label_0"] == [int(label)]
            np.testing.assert_allclose(out["probabilities_1"], [proba], atol=1e-4)
            assert answer["metadata"]["batch_size"] == 1
            assert answer["metadata"]["model_id"] == server.service.model.model_id
            assert answer["metadata"]["inference_time_ms"] >= 0
        # the whole test split as one batch
        answer = predict(server, X)
        out = outputs_of(answer)
        assert answer["metadata"]["batch_size"] == len(X)
        np.testing.assert_array_equal(out["label_0"], built.estimator.predict(X))
        np.testing.assert_allclose(out["probabilities_1"], built.estimator.predict_proba(X), atol=1e-4)


def test_regressors_match_scikit_learn(frontend):
    for built in (models.diabetes_regressor(), models.linear_regressor_f64()):
        with PredictiveServer(built.path, frontend=frontend) as server:
            out = outputs_of(predict(server, built.X))
            expected = built.estimator.predict(built.X)
            np.testing.assert_allclose(np.asarray(out["variable_0"]).ravel(), expected, rtol=1e-4, atol=1e-3)
            model_doc = requests.get(server.url("/v1/model"), timeout=10).json()
            assert model_doc["type"] == "regression"


def test_zipmap_classifier_outputs_maps(frontend):
    built = models.iris_logreg(zipmap=True)
    with PredictiveServer(built.path, frontend=frontend) as server:
        out = outputs_of(predict(server, built.X[:3]))
        assert out["output_label_0"] == built.estimator.predict(built.X[:3]).tolist()
        probabilities = out["output_probability_1"]
        assert len(probabilities) == 3 and set(probabilities[0]) == {"0", "1", "2"}
        expected = built.estimator.predict_proba(built.X[:3])
        for row, exp in zip(probabilities, expected, strict=True):
            np.testing.assert_allclose([row[k] for k in ("0", "1", "2")], exp, atol=1e-4)


@pytest.mark.parametrize("type_name", ["float16", "float32", "float64", "int32", "int64", "uint8"])
def test_every_input_type(type_name, frontend):
    built = models.typed_identity(type_name)
    x = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=type_name)
    with PredictiveServer(built.path, frontend=frontend) as server:
        out = outputs_of(predict(server, x))
        np.testing.assert_array_equal(out["doubled_0"], (x + x).tolist())
        np.testing.assert_array_equal(out["total_1"], x.sum(axis=1, keepdims=True).tolist())
        doc = requests.get(server.url("/v1/model"), timeout=10).json()
        assert doc["input_type"] == {"float32": "tensor(float)", "float64": "tensor(double)"}.get(
            type_name, f"tensor({type_name})")


def _png(pixels):
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _reference_chw(pixels):
    """Independent numpy preprocessing: [0,1], ImageNet mean/std, HWC->CHW, batch axis."""
    x = pixels.astype(np.float64) / 255.0
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return x.transpose(2, 0, 1)[np.newaxis].astype(np.float32)


def test_squeezenet_image_matches_numpy_reference(frontend):
    built = models.squeezenet()
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    expected = ort.InferenceSession(built.path, providers=["CPUExecutionProvider"]).run(
        None, {"data_0": _reference_chw(pixels)})[0]
    with PredictiveServer(built.path, frontend=frontend) as server:
        answer = predict(server, _png(pixels), "image/png")
        out = np.asarray(outputs_of(answer)["softmaxout_1_0"], dtype=np.float32)
        assert out.shape == (1, 1000, 1, 1)
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)
        assert np.argmax(out) == np.argmax(expected)
        # the same pixels as JPEG, GIF, WebP and BMP decode and run (lossy formats: close to the PNG answer)
        import io

        from PIL import Image
        for fmt, ctype in (("JPEG", "image/jpeg"), ("BMP", "image/bmp"), ("WEBP", "image/webp"), ("GIF", "image/gif")):
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format=fmt)
            out = np.asarray(outputs_of(predict(server, buf.getvalue(), ctype))["softmaxout_1_0"])
            assert out.shape == (1, 1000, 1, 1)
            assert abs(out.sum() - 1.0) < 1e-3
        doc = requests.get(server.url("/v1/model"), timeout=10).json()
        assert doc["input_shape"] == ["N", 3, 224, 224]


def test_channels_last_image_is_resized_and_normalised(frontend):
    built = models.channels_last_image(32)
    # 64x64 image of four uniform 32x32 quadrants -> resized to 32x32: quadrant interiors keep their colour
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 100, 50)]
    for i, (r, c) in enumerate([(0, 0), (0, 32), (32, 0), (32, 32)]):
        pixels[r:r + 32, c:c + 32] = colours[i]
    with PredictiveServer(built.path, frontend=frontend) as server:
        out = outputs_of(predict(server, _png(pixels), "image/png"))
        got = np.asarray(out["pixels_1"], dtype=np.float32)[0]
        assert got.shape == (32, 32, 3)
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        for i, (r, c) in enumerate([(2, 2), (2, 18), (18, 2), (18, 18)]):
            expected = (np.array(colours[i]) / 255.0 - mean) / std
            np.testing.assert_allclose(got[r:r + 12, c:c + 12].reshape(-1, 3),
                                       np.broadcast_to(expected, (144, 3)), atol=1e-5)
