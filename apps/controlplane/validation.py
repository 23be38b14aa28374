"""Request bodies of the control plane as marshmallow schemas: strict types, no unknown fields, field-level errors.

The CRD schema (enforced again by the store) is the last line; these schemas give callers the contract's
`details.errors` with the reference's field paths and add the rules a CRD cannot express (GPU limits, vLLM rules).
apispec turns the same schemas into /openapi.json.
"""
import numbers
import re

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates, validates_schema

from foundry_inference import workload_policy

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
ENUM_ERROR = "value is not a valid enumeration member; permitted: {choices}"


def Enum(choices, **kwargs):  # noqa: N802 - reads like a field class
    return fields.String(validate=validate.OneOf(choices, error=ENUM_ERROR), metadata={"enum": list(choices)},
                         **kwargs)


class StrictInteger(fields.Integer):
    """An integer that is not a bool, a float or a string."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _validated(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise self.make_error("invalid")
        return super()._validated(value)


class StrictBoolean(fields.Boolean):
    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class Quantity(fields.Raw):
    """A Kubernetes quantity: `500m`, `2`, `4Gi`, or a non-negative integer."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValidationError("must be a quantity such as 500m, 2 or 4Gi")
        if isinstance(value, int):
            if value < 0:
                raise ValidationError("must not be negative")
            return value
        if len(value) > 32 or not _QUANTITY.match(value) or value.startswith("-"):
            raise ValidationError("must be a quantity such as 500m, 2 or 4Gi")
        return value


def Name(pattern=DNS_LABEL, max_length=63, **kwargs):  # noqa: N802
    return fields.String(validate=[validate.Length(1, max_length), validate.Regexp(
        pattern, error="must be a lowercase RFC 1123 name: lower case alphanumerics and '-', starting and ending "
                       "with an alphanumeric")], **kwargs)


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class SecretRefSchema(StrictSchema):
    name = Name(DNS_SUBDOMAIN, 253, required=True)
    usernameKey = fields.String(validate=validate.Length(1, 253))  # noqa: N815 - contract field names
    passwordKey = fields.String(validate=validate.Length(1, 253))  # noqa: N815


class CredentialsSchema(StrictSchema):
    secretRef = fields.Nested(SecretRefSchema, required=True)  # noqa: N815


class CustomSourceSchema(StrictSchema):
    registry = fields.String(required=True, validate=validate.Length(1, 260))
    repository = fields.String(required=True, validate=[validate.Length(1, 255), validate.Regexp(
        r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$",
        error="must be an OCI repository path such as models/my-model")])
    tag = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$",
                                                                error="must be an OCI tag"))
    credentials = fields.Nested(CredentialsSchema)


class CatalogRefSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(1, 256))
    version = fields.String(validate=validate.Length(1, 64))


class ModelRefSchema(StrictSchema):
    ref = Name(DNS_SUBDOMAIN, 253)
    catalog = fields.Nested(CatalogRefSchema)
    custom = fields.Nested(CustomSourceSchema)

    @validates_schema
    def exactly_one(self, data, **kwargs):
        given = [key for key in ("ref", "catalog", "custom") if key in data]
        if len(given) != 1:
            raise ValidationError(f"exactly one of ref, catalog or custom is required (got {len(given)})", "_schema")


class EnvVarSchema(StrictSchema):
    name = fields.String(required=True, validate=[validate.Length(1, 256), validate.Regexp(
        r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", error="must be a valid environment variable name")])
    value = fields.String(validate=validate.Length(0, 32768))

    @validates("name")
    def not_reserved(self, value, **kwargs):
        reason = workload_policy.env_name_refused(value)
        if reason:
            raise ValidationError(f"{value} {reason}")

    @post_load
    def drop_empty_value(self, data, **kwargs):
        """An absent value is the empty string to Kubernetes; apiserver 1.20 refuses an explicit "" here."""
        if data.get("value") == "":
            del data["value"]
        return data


class ResourceListSchema(StrictSchema):
    cpu = Quantity()
    memory = Quantity()
    gpu = StrictInteger(validate=validate.Range(0, 8))


class ResourcesSchema(StrictSchema):
    requests = fields.Nested(ResourceListSchema)
    limits = fields.Nested(ResourceListSchema)


class TolerationSchema(StrictSchema):
    key = fields.String(validate=validate.Length(0, 316))
    operator = Enum(["Exists", "Equal"])
    value = fields.String(validate=validate.Length(0, 63))
    effect = Enum(["NoSchedule", "PreferNoSchedule", "NoExecute"])
    tolerationSeconds = StrictInteger()  # noqa: N815


class TlsSchema(StrictSchema):
    enabled = StrictBoolean()
    secretName = Name(DNS_SUBDOMAIN, 253)  # noqa: N815


class EndpointSchema(StrictSchema):
    enabled = StrictBoolean()
    host = fields.String(validate=validate.Regexp(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*"
                                                  r"[a-z0-9])?)*$", error="must be a DNS name"))
    path = fields.String(validate=[validate.Length(1, 1024), validate.Regexp(r"^/[^\s{};]*$",
                                                                              error="must start with / and "
                                                                                    "contain no spaces")])
    pathType = Enum(["Exact", "Prefix", "ImplementationSpecific"])  # noqa: N815
    ingressClassName = Name(DNS_SUBDOMAIN, 253)  # noqa: N815
    annotations = fields.Dict(keys=fields.String(validate=validate.Length(1, 316)),
                              values=fields.String(validate=validate.Length(0, 4096)))
    tls = fields.Nested(TlsSchema)


class AuthConfigSchema(StrictSchema):
    enabled = StrictBoolean()


class VllmSchema(StrictSchema):
    preferences = fields.Dict(keys=fields.String(validate=validate.Length(1, 128)))
    modelCacheStorageGi = StrictInteger(validate=validate.Range(1, 100000))  # noqa: N815

    @validates_schema
    def only_allowed_options(self, data, **kwargs):
        refused = sorted(k for k in data.get("preferences") or {} if workload_policy.vllm_option(k) is None)
        if refused:
            raise ValidationError(f"not allowed: {', '.join(refused)} (host, port and model are set by the platform; "
                                  "docs/operator.md lists the vLLM options a deployment may set)", "preferences")


class AutoscalingPatchSchema(StrictSchema):
    """spec.autoscaling in a PATCH: any subset (the merged spec is validated whole afterwards)."""
    minReplicas = StrictInteger(validate=validate.Range(0, 100))  # noqa: N815
    maxReplicas = StrictInteger(validate=validate.Range(1, 100))  # noqa: N815
    targetConcurrency = StrictInteger(validate=validate.Range(1, 1000))  # noqa: N815
    scaleDownDelaySeconds = StrictInteger(validate=validate.Range(0, 3600))  # noqa: N815
    scaleToZeroAfterSeconds = StrictInteger(validate=validate.Range(1, 86400))  # noqa: N815


class AutoscalingSchema(AutoscalingPatchSchema):
    """spec.autoscaling (docs/autoscaling.md); the cross-field rules a CRD schema cannot express are here."""
    maxReplicas = StrictInteger(required=True, validate=validate.Range(1, 100))  # noqa: N815

    @validates_schema
    def bounds(self, data, **kwargs):
        low, found = data.get("minReplicas", 1), {}
        if "maxReplicas" in data and data["maxReplicas"] < max(1, low):
            found["maxReplicas"] = [f"must be at least max(1, minReplicas) = {max(1, low)}"]
        if "scaleToZeroAfterSeconds" in data and low != 0:
            found["scaleToZeroAfterSeconds"] = ["only allowed with minReplicas 0 (scale to zero)"]
        if found:
            raise ValidationError(found)


class WorkloadSpecSchema(StrictSchema):
    """Fields shared by ModelDeployment and the legacy InferenceService."""

    runtime = Enum(["onnx-genai", "vllm"])
    vllm = fields.Nested(VllmSchema)
    skipGpuResource = StrictBoolean()  # noqa: N815
    replicas = StrictInteger(validate=validate.Range(1, 100))
    autoscaling = fields.Nested(AutoscalingSchema)
    port = StrictInteger(validate=validate.Range(1024, 65535))
    displayName = fields.String(validate=validate.Length(0, 256))  # noqa: N815
    env = fields.List(fields.Nested(EnvVarSchema), validate=validate.Length(0, 256))
    resources = fields.Nested(ResourcesSchema)
    nodeSelector = fields.Dict(keys=fields.String(validate=validate.Length(1, 316)),  # noqa: N815
                               values=fields.String(validate=validate.Length(0, 63)))
    tolerations = fields.List(fields.Nested(TolerationSchema), validate=validate.Length(0, 64))
    authentication = fields.Nested(AuthConfigSchema)

    compute_field = "compute"

    @validates_schema
    def platform_rules(self, data, **kwargs):
        """The rules a CRD schema cannot express."""
        compute = data.get(self.compute_field)
        limits = (data.get("resources") or {}).get("limits") or {}
        if compute == "gpu" and not data.get("skipGpuResource") and not 1 <= (limits.get("gpu") or 0) <= 8:
            raise ValidationError("required (1-8) when compute is gpu and skipGpuResource is false",
                                  "resources.limits.gpu")
        if data.get("skipGpuResource") and not data.get("nodeSelector"):
            raise ValidationError("required when skipGpuResource is true (GPU nodes must be selected)",
                                  "nodeSelector")
        if data.get("runtime") == "vllm" and compute != "gpu":
            raise ValidationError("the vllm runtime requires compute gpu", self.compute_field)


class DeploymentSpecSchema(WorkloadSpecSchema):
    model = fields.Nested(ModelRefSchema, required=True)
    compute = Enum(["cpu", "gpu"], required=True)
    workloadType = Enum(["generative", "predictive"])  # noqa: N815
    endpoint = fields.Nested(EndpointSchema)


class DeploymentSchema(StrictSchema):
    name = Name(required=True)
    spec = fields.Nested(DeploymentSpecSchema, required=True)


class DeploymentPatchSchema(StrictSchema):
    replicas = StrictInteger(validate=validate.Range(1, 100))
    autoscaling = fields.Nested(AutoscalingPatchSchema, allow_none=True)  # null: back to fixed replicas
    env = fields.List(fields.Nested(EnvVarSchema), validate=validate.Length(0, 256))
    resources = fields.Nested(ResourcesSchema)
    endpoint = fields.Nested(EndpointSchema)


class FoundrySourceSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(1, 256))
    version = fields.String(validate=validate.Length(1, 64))


class ModelSourceSchema(StrictSchema):
    foundry = fields.Nested(FoundrySourceSchema)
    byo = fields.Nested(CustomSourceSchema)

    @validates_schema
    def exactly_one(self, data, **kwargs):
        given = [key for key in ("foundry", "byo") if key in data]
        if len(given) != 1:
            raise ValidationError(f"exactly one of foundry or byo is required (got {len(given)})", "_schema")


class InferenceServiceSpecSchema(WorkloadSpecSchema):
    modelSource = fields.Nested(ModelSourceSchema, required=True)  # noqa: N815
    hardware = Enum(["cpu", "gpu"], required=True)
    inferenceType = Enum(["generative", "predictive"])  # noqa: N815
    ingress = fields.Nested(EndpointSchema)

    compute_field = "hardware"


class InferenceServiceSchema(StrictSchema):
    name = Name(required=True)
    spec = fields.Nested(InferenceServiceSpecSchema, required=True)


class InferenceServicePatchSchema(StrictSchema):
    replicas = StrictInteger(validate=validate.Range(1, 100))
    autoscaling = fields.Nested(AutoscalingPatchSchema, allow_none=True)  # null: back to fixed replicas
    env = fields.List(fields.Nested(EnvVarSchema), validate=validate.Length(0, 256))
    resources = fields.Nested(ResourcesSchema)
    ingress = fields.Nested(EndpointSchema)


class CapabilitiesSchema(StrictSchema):
    task = fields.String(validate=validate.Length(1, 64))
    contextLength = StrictInteger(validate=validate.Range(1, 10_000_000))  # noqa: N815
    maxOutputTokens = StrictInteger(validate=validate.Range(1, 10_000_000))  # noqa: N815
    streaming = StrictBoolean()
    toolCalling = StrictBoolean()  # noqa: N815
    inputModalities = fields.List(fields.String(validate=validate.Length(1, 32)))  # noqa: N815
    outputModalities = fields.List(fields.String(validate=validate.Length(1, 32)))  # noqa: N815


class ModelSourceTypeSchema(StrictSchema):
    type = fields.String(required=True, validate=validate.Equal(
        "custom", error="only custom (BYO) models can be registered; catalog models come from the catalog sync"))
    custom = fields.Nested(CustomSourceSchema, required=True)


class CustomModelSchema(StrictSchema):
    name = Name(DNS_SUBDOMAIN, 253, required=True)
    displayName = fields.String(validate=validate.Length(0, 256))  # noqa: N815
    description = fields.String(validate=validate.Length(0, 4096))
    publisher = fields.String(validate=validate.Length(0, 256))
    license = fields.String(validate=validate.Length(0, 256))
    framework = fields.String(validate=validate.Length(0, 64))
    modelVersion = fields.String(validate=validate.Length(0, 64))  # noqa: N815
    workloadType = Enum(["generative", "predictive"])  # noqa: N815
    runtime = Enum(["onnx-genai", "vllm"])
    source = fields.Nested(ModelSourceTypeSchema, required=True)
    capabilities = fields.Nested(CapabilitiesSchema)
    supportedCompute = fields.List(Enum(["cpu", "gpu", "npu", "CPU", "GPU", "NPU"]))  # noqa: N815
    tags = fields.Dict(keys=fields.String(validate=validate.Length(1, 128)),
                       values=fields.String(validate=validate.Length(0, 256)))


def flatten(messages, prefix=""):
    """marshmallow's nested error dict -> [{"field": "spec.env[0].name", "message": ...}]."""
    out = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key == "_schema":
                path = prefix or "body"
            elif isinstance(key, int):
                path = f"{prefix}[{key}]"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            out.extend(flatten(value, path))
    elif isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages):
        for message in messages:
            out.append({"field": prefix or "body", "message": message})
    elif isinstance(messages, list):
        for message in messages:
            out.extend(flatten(message, prefix))
    else:
        out.append({"field": prefix or "body", "message": str(messages)})
    return out


def load(schema, data, prefix=""):
    """Validate `data` with `schema`; returns the loaded dict or raises ValidationError with flattened messages."""
    try:
        return schema.load(data)
    except ValidationError as exc:
        errors = flatten(exc.messages, prefix)
        for err in errors:
            if err["message"] == "Unknown field.":
                err["message"] = "unknown field"
        raise ValidationError(errors) from None
