"""Real ONNX models for the predictive-server tests and benchmark, built from scikit-learn (skl2onnx) and from the
`onnx` package's backend test data, cached under ~/.cache/foundry-inference/models.

Each builder returns a `BuiltModel`: the .onnx path, the fitted estimator (for reference predictions) and a sample of
inputs. The cache key includes the library versions, so an upgrade rebuilds instead of reusing a stale file.
"""
import hashlib
import os
import pickle
from dataclasses import dataclass

import numpy as np

CACHE_DIR = os.environ.get("FOUNDRY_TEST_MODEL_CACHE",
                           os.path.join(os.path.expanduser("~"), ".cache", "foundry-inference", "models"))


@dataclass
class BuiltModel:
    name: str
    path: str
    estimator: object      # scikit-learn estimator, or None for graphs
    X: np.ndarray          # sample inputs (the test split for sklearn models)


def _versions():
    import onnx
    import sklearn
    try:
        import skl2onnx
        skl = skl2onnx.__version__
    except ImportError:   # pragma: no cover
        skl = "none"
    return f"sk{sklearn.__version__}-skl2onnx{skl}-onnx{onnx.__version__}"


def _cached(name, build):
    """(path, payload): build() -> (onnx bytes, payload) once per library versions, atomically written."""
    os.makedirs(CACHE_DIR, exist_ok=True)
    key = hashlib.sha1(f"{name}-{_versions()}".encode()).hexdigest()[:10]
    path = os.path.join(CACHE_DIR, f"{name}-{key}.onnx")
    meta = path + ".pkl"
    if not (os.path.exists(path) and os.path.exists(meta)):
        model_bytes, payload = build()
        for target, data in ((path, model_bytes), (meta, pickle.dumps(payload))):
            tmp = f"{target}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
    with open(meta, "rb") as f:
        return path, pickle.load(f)


def _to_onnx(estimator, n_features, dtype=np.float32, zipmap=False):
    from skl2onnx import to_onnx
    sample = np.zeros((1, n_features), dtype=dtype)
    options = {id(estimator): {"zipmap": zipmap}} if hasattr(estimator, "predict_proba") else None
    onx = to_onnx(estimator, sample, options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    return onx.SerializeToString()


def _sklearn(name, make):
    def build():
        estimator, X_test, n_features, dtype, zipmap = make()
        return _to_onnx(estimator, n_features, dtype, zipmap), (estimator, X_test)
    path, (estimator, X) = _cached(name, build)
    return BuiltModel(name, path, estimator, X)


def iris_logreg(zipmap=False):
    """Iris logistic regression (float32 [N,4] -> label int64 [N], probabilities float [N,3])."""
    def make():
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split
        X, y = load_iris(return_X_y=True)
        X = X.astype(np.float32)
        X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.3, random_state=0)
        return LogisticRegression(max_iter=500).fit(X_train, y_train), X_test, 4, np.float32, zipmap
    return _sklearn("iris-logreg-zipmap" if zipmap else "iris-logreg", make)


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    return train_test_split(X, y, test_size=0.3, random_state=0)


def digits_mlp():
    """Digits MLP 256x256 (float32 [N,64] -> label, probabilities [N,10]): the engine-facts benchmark model."""
    def make():
        from sklearn.neural_network import MLPClassifier
        X_train, X_test, y_train, _ = _digits()
        mlp = MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=300, random_state=0).fit(X_train / 16.0, y_train)
        return _ScaledPipeline.make(mlp), X_test, 64, np.float32, False
    return _sklearn("digits-mlp", make)


class _ScaledPipeline:
    """Digits pixels are 0..16; the MLP is trained on /16. A Pipeline keeps the scaling inside the ONNX graph."""

    @staticmethod
    def make(mlp):
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler
        del FunctionTransformer
        scaler = StandardScaler(with_mean=False)
        scaler.mean_, scaler.scale_, scaler.var_ = None, np.full(64, 16.0), np.full(64, 256.0)
        scaler.n_features_in_, scaler.n_samples_seen_ = 64, 1
        return Pipeline([("scale", scaler), ("mlp", mlp)])


def digits_forest():
    """Digits random forest (tree ensemble in the ai.onnx.ml domain)."""
    def make():
        from sklearn.ensemble import RandomForestClassifier
        X_train, X_test, y_train, _ = _digits()
        forest = RandomForestClassifier(n_estimators=30, max_depth=10, random_state=0).fit(X_train, y_train)
        return forest, X_test, 64, np.float32, False
    return _sklearn("digits-forest", make)


def diabetes_regressor():
    """Diabetes gradient-boosting regressor (float32 [N,10] -> variable float [N,1])."""
    def make():
        from sklearn.datasets import load_diabetes
        from sklearn.ensemble import GradientBoostingRegressor
        from sklearn.model_selection import train_test_split
        X, y = load_diabetes(return_X_y=True)
        X = X.astype(np.float32)
        X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.3, random_state=0)
        return GradientBoostingRegressor(n_estimators=50, random_state=0).fit(X_train, y_train), X_test, 10, \
            np.float32, False
    return _sklearn("diabetes-gbr", make)


def linear_regressor_f64():
    """Linear regression on float64 inputs (tensor(double))."""
    def make():
        from sklearn.datasets import load_diabetes
        from sklearn.linear_model import LinearRegression
        X, y = load_diabetes(return_X_y=True)
        return LinearRegression().fit(X[:300], y[:300]), X[300:], 10, np.float64, False
    return _sklearn("diabetes-linreg-f64", make)


# --- graphs built with onnx.helper ----------------------------------------------------------------------------------

def _graph_model(name, build):
    path, payload = _cached(name, lambda: (build().SerializeToString(), None))
    return BuiltModel(name, path, None, payload)


def typed_identity(type_name):
    """[N,4] of the given type -> `doubled` = X + X (same type) and `total` = the row sums as double [N,1]."""
    def build():
        import onnx
        from onnx import TensorProto, helper
        elem = {"float16": TensorProto.FLOAT16, "float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE,
                "int32": TensorProto.INT32, "int64": TensorProto.INT64, "uint8": TensorProto.UINT8}[type_name]
        x = helper.make_tensor_value_info("x", elem, ["N", 4])
        doubled = helper.make_tensor_value_info("doubled", elem, ["N", 4])
        total = helper.make_tensor_value_info("total", TensorProto.DOUBLE, ["N", 1])
        axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
        nodes = [helper.make_node("Add", ["x", "x"], ["doubled"]),
                 helper.make_node("Cast", ["x"], ["x64"], to=TensorProto.DOUBLE),
                 helper.make_node("ReduceSum", ["x64", "axes"], ["total"], keepdims=1)]
        graph = helper.make_graph(nodes, f"typed_{type_name}", [x], [doubled, total], initializer=[axes])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model
    return _graph_model(f"typed2-{type_name}", build)


def fixed_batch_model():
    """Input [1,4] with a fixed batch of 1: served one request per run."""
    def build():
        from onnx import TensorProto, helper
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
        graph = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "fixed", [x], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model
    return _graph_model("fixed-batch", build)


def aggregate_model():
    """Input [N,4] whose output sums over the batch: dimension 0 does not carry through, so no batching."""
    def build():
        from onnx import TensorProto, helper
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
        axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
        graph = helper.make_graph([helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)], "agg", [x], [y],
                                  initializer=[axes])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model
    return _graph_model("aggregate", build)


def channels_last_image(size=32):
    """[N,size,size,3] float -> per-channel means [N,3] and the raw pixels: checks the HWC image path exactly."""
    def build():
        from onnx import TensorProto, helper
        x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size, size, 3])
        mean = helper.make_tensor_value_info("channel_mean", TensorProto.FLOAT, ["N", 3])
        pixels = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", size, size, 3])
        axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
        nodes = [helper.make_node("ReduceMean", ["image", "axes"], ["channel_mean"], keepdims=0),
                 helper.make_node("Identity", ["image"], ["pixels"])]
        graph = helper.make_graph(nodes, "hwc", [x], [mean, pixels], initializer=[axes])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 8
        return model
    return _graph_model(f"hwc-image-{size}", build)


def squeezenet(seed=0):
    """SqueezeNet 1.0 from the onnx package's backend test data (`light_squeezenet.onnx`): the real graph, whose
    weights are stored as ConstantOfShape placeholders, given seeded He-initialised weights and a dynamic batch
    dimension. Input data_0 [N,3,224,224] -> softmaxout_1 [N,1000,1,1]."""
    def build():
        import onnx
        from onnx import numpy_helper
        source = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                              "light_squeezenet.onnx")
        model = onnx.load(source)
        graph = model.graph
        shapes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        rng = np.random.default_rng(seed)
        new_inits, keep_nodes = [], []
        for node in graph.node:
            if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
                shape = tuple(int(d) for d in shapes[node.input[0]])
                if len(shape) == 4:
                    fan_in = shape[1] * shape[2] * shape[3]
                    value = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32)
                else:
                    value = rng.normal(0.0, 0.01, size=shape).astype(np.float32)
                new_inits.append(numpy_helper.from_array(value, node.output[0]))
            else:
                keep_nodes.append(node)
        del graph.node[:]
        graph.node.extend(keep_nodes)
        initialised = {t.name for t in new_inits}
        others = [t for t in graph.initializer if not t.name.endswith("__SHAPE")]
        del graph.initializer[:]
        graph.initializer.extend(others + new_inits)
        initialised |= {t.name for t in others}
        data_inputs = [i for i in graph.input if i.name not in initialised and not i.name.endswith("__SHAPE")]
        del graph.input[:]
        graph.input.extend(data_inputs)
        graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
        graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
        model.ir_version = max(model.ir_version, 4)
        onnx.checker.check_model(model)
        return model
    return _graph_model(f"squeezenet-{seed}", build)
