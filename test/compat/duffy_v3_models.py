"""Duffy v3's pydantic API models (duffy/api_models/*.py, duffy/misc.py, duffy/database/types.py of CentOS/duffy),
transcribed so that our answers can be parsed the way a Python client parses them. Kept to what clients send and
parse; field names, types, defaults and config are as in Duffy v3."""

import datetime as dt
import re
from enum import Enum
from typing import Any, Dict, List, Literal, Optional, Union
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    PlainSerializer,
    SecretStr,
    WrapValidator,
    model_validator,
)
from typing_extensions import Annotated


# duffy/misc.py: CustomTimeDelta (validation and serialization only)
def _timedelta_type(needs_sign: bool, allow_negative: bool, allow_dimensionless_seconds: bool, serialize_to_seconds: bool):
    sign = "+-" if allow_negative else "+"
    opt = "" if needs_sign else "?"
    regex = re.compile(
        rf"(?P<sign>[{sign}]){opt}(?!\s*$)"
        + r"(?:\s*(?P<weeks>\d+)w)?(?:\s*(?P<days>\d+)d)?(?:\s*(?P<hours>\d+)h)?"
        + r"(?:\s*(?P<minutes>\d+)m)?(?:\s*(?P<seconds>\d+)s)?(?:\s*(?P<milliseconds>\d+)ms)?"
    )

    def validate(v, handler):
        if isinstance(v, dt.timedelta):
            return handler(v)
        if allow_dimensionless_seconds:
            if isinstance(v, (int, float)):
                return dt.timedelta(seconds=v)
            if not isinstance(v, str):
                raise TypeError(f"input value {v!r} must be a string, an integer or a float")
            if v.isdigit():
                return dt.timedelta(seconds=int(v))
        elif not isinstance(v, str):
            raise TypeError("input value must be a string")
        m = regex.fullmatch(v.strip().lower())
        if not m:
            raise ValueError("invalid timedelta format")
        s = -1 if m.group("sign") == "-" else 1
        return dt.timedelta(**{k: s * int(m.group(k) or 0) for k in ("weeks", "days", "hours", "minutes", "seconds", "milliseconds")})

    def serialize(v: dt.timedelta):
        total = v.total_seconds()
        if serialize_to_seconds:
            return int(total) if not v.microseconds else total
        # As v3 writes a duration: its sign, then weeks, days, hours, minutes, seconds, ms, the zero ones left out.
        sign = "-" if total < 0 else "+" if needs_sign else ""
        v = -v if total < 0 else v
        units = [(v.days // 7, "w"), (v.days % 7, "d"), (v.seconds // 3600, "h"), (v.seconds % 3600 // 60, "m"), (v.seconds % 60, "s"), (v.microseconds // 1000, "ms")]
        return sign + ("".join(f"{n}{unit}" for n, unit in units if n) or "0s")

    return Annotated[dt.timedelta, WrapValidator(validate), PlainSerializer(serialize)]


ConfigTimeDelta = _timedelta_type(False, False, True, True)
APITimeDelta = _timedelta_type(True, True, False, False)


# duffy/database/types.py
class NodeState(str, Enum):
    unused = "unused"
    provisioning = "provisioning"
    ready = "ready"
    contextualizing = "contextualizing"
    deployed = "deployed"
    deprovisioning = "deprovisioning"
    done = "done"
    failed = "failed"


# common.py
class CreatableMixin(BaseModel):
    created_at: dt.datetime


class RetirableMixin(BaseModel):
    retired_at: Optional[dt.datetime] = None
    active: bool


class APIResultAction(str, Enum):
    get = "get"
    post = "post"
    put = "put"


class APIResult(BaseModel):
    action: Optional[APIResultAction] = None


# tenant.py
class TenantBase(BaseModel):
    name: str
    is_admin: Optional[bool] = None
    ssh_key: SecretStr
    node_quota: Optional[Annotated[int, Field(gt=0)]] = None
    session_lifetime: Optional[ConfigTimeDelta] = None
    session_lifetime_max: Optional[ConfigTimeDelta] = None
    model_config = ConfigDict(from_attributes=True, ser_json_timedelta="float")


class TenantCreateModel(TenantBase):
    pass


class TenantRetireModel(BaseModel):
    active: bool


class TenantUpdateModel(BaseModel):
    ssh_key: Optional[SecretStr] = None
    api_key: Optional[Union[UUID, Literal["reset"]]] = None
    node_quota: Optional[Annotated[int, Field(gt=0)]] = None
    session_lifetime: Optional[ConfigTimeDelta] = None
    session_lifetime_max: Optional[ConfigTimeDelta] = None

    @model_validator(mode="before")
    @classmethod
    def check_any_field_set(cls, values):
        fields = ("ssh_key", "api_key", "node_quota", "session_lifetime", "session_lifetime_max")
        if not any(f in values for f in fields):
            raise ValueError(f"one of {', '.join(fields)} is required")
        return values


class TenantModel(TenantBase, CreatableMixin, RetirableMixin):
    id: int
    effective_node_quota: int
    effective_session_lifetime: dt.timedelta
    effective_session_lifetime_max: dt.timedelta


class TenantCreateResultModel(TenantModel):
    ssh_key: str
    api_key: UUID


class TenantUpdateResultModel(TenantModel):
    api_key: Optional[Union[UUID, SecretStr]] = None


class TenantResult(APIResult):
    tenant: TenantModel


class TenantCreateResult(TenantResult):
    tenant: TenantCreateResultModel


class TenantUpdateResult(TenantResult):
    tenant: TenantUpdateResultModel


class TenantResultCollection(APIResult):
    tenants: List[TenantModel]


# node.py
class NodeBase(BaseModel):
    hostname: Optional[str] = None
    ipaddr: Optional[IPvAnyAddress] = None
    comment: Optional[str] = None
    pool: Optional[str] = None
    reusable: bool
    data: Dict[str, Any]
    model_config = ConfigDict(from_attributes=True)


class NodeCreateModel(NodeBase):
    hostname: str
    ipaddr: IPvAnyAddress
    reusable: bool = True
    data: Dict[str, Any] = {}


class NodeModel(NodeBase, CreatableMixin, RetirableMixin):
    id: int
    state: NodeState


class NodeResult(APIResult):
    node: NodeModel


class NodeResultCollection(APIResult):
    nodes: List[NodeModel]


# pool.py
class PoolLevelsModel(BaseModel):
    provisioning: Annotated[int, Field(ge=0)]
    ready: Annotated[int, Field(ge=0)]
    contextualizing: Annotated[int, Field(ge=0)]
    deployed: Annotated[int, Field(ge=0)]
    deprovisioning: Annotated[int, Field(ge=0)]


class PoolBase(BaseModel):
    name: str
    fill_level: Annotated[int, Field(ge=0)] = Field(alias="fill-level")
    model_config = ConfigDict(extra="forbid")


class PoolConciseModel(PoolBase):
    pass


class PoolVerboseModel(PoolConciseModel):
    levels: PoolLevelsModel


PoolModel = Union[PoolConciseModel, PoolVerboseModel]


class PoolResult(APIResult):
    pool: PoolModel


class PoolResultCollection(APIResult):
    pools: List[PoolModel]


# session.py
class NodesSpec(BaseModel):
    quantity: Annotated[int, Field(ge=1)]
    pool: str


class SessionNodeModel(NodeBase):
    id: int
    state: Optional[NodeState] = None


class SessionBase(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class SessionCreateModel(SessionBase):
    tenant_id: Optional[int] = None
    nodes_specs: List[NodesSpec]


class SessionUpdateModel(SessionBase):
    active: Optional[bool] = None
    expires_at: Optional[Union[dt.datetime, APITimeDelta]] = None


class SessionModel(SessionBase, CreatableMixin, RetirableMixin):
    id: int
    expires_at: Optional[dt.datetime] = None
    tenant: TenantModel
    data: Dict[str, Any]
    nodes: List[SessionNodeModel]


class SessionResult(APIResult):
    session: SessionModel


class SessionResultCollection(APIResult):
    sessions: List[SessionModel]


# duffy/client/main.py: how the client reads an error answer
class DuffyApiErrorDetailModel(BaseModel):
    detail: str
    model_config = ConfigDict(extra="allow")


class DuffyAPIErrorModel(BaseModel):
    error: DuffyApiErrorDetailModel
