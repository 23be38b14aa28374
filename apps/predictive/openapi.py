"""The OpenAPI document of the predictive server and a /docs page that renders it with local assets only (pods
have no internet access, so no CDN-hosted Swagger UI)."""
import html
import json

_ERROR = {"type": "object", "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
          "required": ["detail"]}
_QUEUE_FULL = {"type": "object", "properties": {"error": {"type": "string"}, "queue_depth": {"type": "integer"},
                                                 "retry_after": {"type": "integer"}}}
_ITEM = {"type": "object", "required": ["data"], "properties": {
    "content_type": {"type": "string", "enum": ["application/json", "image/jpeg", "image/png", "image/gif",
                                                "image/webp", "image/bmp"], "default": "application/json"},
    "encoder": {"type": "string", "enum": ["base64"], "default": "base64"},
    "data": {"type": "string", "description": "base64 of a JSON array (the input tensor: one row or a batch of rows) "
                                              "or of an image file"}}}


def _json(schema, description="OK"):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes):
    text = {400: "Bad input", 401: "Missing or invalid credentials", 403: "Not permitted",
            413: "Body or image too large", 503: "Model not loaded yet"}
    return {str(c): _json({"$ref": "#/components/schemas/Error"}, text[c]) for c in codes}


def openapi_document(model_id=None):
    return {
        "openapi": "3.0.3",
        "info": {"title": "Foundry predictive server", "version": "1.0",
                 "description": f"ONNX inference for model {model_id}" if model_id else "ONNX inference"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "api-key"}},
            "schemas": {
                "Error": _ERROR, "QueueFull": _QUEUE_FULL, "Item": _ITEM,
                "PredictRequest": {"type": "object", "required": ["items"], "properties": {
                    "items": {"type": "array", "minItems": 1, "maxItems": 1,
                              "items": {"$ref": "#/components/schemas/Item"}}}},
                "PredictResponse": {"type": "object", "properties": {
                    "metadata": {"type": "object", "properties": {
                        "model_id": {"type": "string"}, "batch_size": {"type": "integer"},
                        "inference_time_ms": {"type": "number"}}},
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"},
                              "description": "one item: base64 of a JSON object keyed "
                                             "`<output name>_<output index>`"}}},
                "Model": {"type": "object", "properties": {
                    k: {"type": t} for k, t in (("id", "string"), ("name", "string"), ("type", "string"),
                                                ("input_name", "string"), ("input_type", "string"),
                                                ("input_shape", "array"), ("outputs", "array"),
                                                ("batch_size", "integer"), ("execution_provider", "string"),
                                                ("status", "string"))}},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {
            "/health": {"get": {"summary": "Liveness probe", "security": [],
                                "responses": {"200": _json({"type": "object"})}}},
            "/ready": {"get": {"summary": "Readiness probe: 200 once the model is loaded and warmed up", "security": [],
                               "responses": {"200": _json({"type": "object"}), **_errors(503)}}},
            "/v1/model": {"get": {"summary": "Model metadata",
                                  "responses": {"200": _json({"$ref": "#/components/schemas/Model"}),
                                                **_errors(401, 403, 503)}}},
            "/v1/predict": {"post": {
                "summary": "Predictive inference (exactly one item)",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/PredictRequest"}}}},
                "responses": {"200": _json({"$ref": "#/components/schemas/PredictResponse"}),
                              "429": _json({"$ref": "#/components/schemas/QueueFull"},
                                           "Queue full; see the Retry-After header"),
                              **_errors(400, 401, 403, 413, 503)}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
        },
    }


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>%(title)s</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#222}
h1{font-size:1.4rem} .op{border:1px solid #ccc;border-radius:6px;margin:.8rem 0;padding:.6rem 1rem}
.m{display:inline-block;min-width:4rem;font-weight:bold;text-transform:uppercase}
.get .m{color:#1565c0} .post .m{color:#2e7d32} pre{background:#f6f8fa;padding:.6rem;overflow:auto}
</style></head>
<body><h1>%(title)s</h1><p>OpenAPI document: <a href="openapi.json">openapi.json</a></p>
<div id="ops"></div>
<script id="spec" type="application/json">%(spec)s</script>
<script>
const spec = JSON.parse(document.getElementById("spec").textContent);
const ops = document.getElementById("ops");
for (const [path, methods] of Object.entries(spec.paths)) {
  for (const [method, op] of Object.entries(methods)) {
    const div = document.createElement("div"); div.className = "op " + method;
    const head = document.createElement("div");
    head.innerHTML = '<span class="m"></span> <code></code> <span></span>';
    head.children[0].textContent = method;
    head.children[1].textContent = path;
    head.children[2].textContent = op.summary || "";
    div.appendChild(head);
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify({requestBody: op.requestBody, responses: op.responses}, null, 2);
    div.appendChild(pre); ops.appendChild(div);
  }
}
</script></body></html>
"""


def docs_page(document):
    spec = json.dumps(document).replace("</", "<\\/")
    return _PAGE % {"title": html.escape(document["info"]["title"]), "spec": spec}
