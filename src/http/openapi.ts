/**
 * The answers as the OpenAPI document (`/api/docs-json`) describes them, for clients generated from it. Shapes are
 * Duffy v3's (its pydantic models, key for key) with Duffy's extra keys; these classes only describe what views.ts
 * builds, they build nothing.
 */
import { applyDecorators } from '@nestjs/common';
import { ApiExtraModels, ApiProperty, ApiResponse, type OpenAPIObject, getSchemaPath } from '@nestjs/swagger';
import { EXTRA_LEVELS, LEVELS } from '../domain/decide-service.js';
import { MACHINE_STATES, MAX_ID } from '../domain/events.js';

const int = { type: 'integer' } as const;
const time = { type: String, format: 'date-time' } as const;
const maybe = { nullable: true } as const;
const anyObject = { type: 'object', additionalProperties: true } as const;

/** Every refusal: `{"detail": "..."}` (and a `Duffy-Refusal` header naming its kind). */
export class Refusal {
  @ApiProperty({ example: 'session 9 not found' }) detail!: string;
}

export class TenantView {
  @ApiProperty(int) id!: number;
  @ApiProperty() name!: string;
  @ApiProperty() is_admin!: boolean;
  @ApiProperty({ description: 'masked, as Duffy v3 shows it', example: '**********' }) ssh_key!: string;
  @ApiProperty({ ...int, ...maybe, description: 'null: the default' }) node_quota!: number | null;
  @ApiProperty({ ...int, ...maybe, description: 'seconds; null: the default' }) session_lifetime!: number | null;
  @ApiProperty({ ...int, ...maybe, description: 'seconds; null: the default' }) session_lifetime_max!: number | null;
  @ApiProperty(time) created_at!: string;
  @ApiProperty({ ...time, ...maybe }) retired_at!: string | null;
  @ApiProperty() active!: boolean;
  @ApiProperty(int) effective_node_quota!: number;
  @ApiProperty({ ...int, description: 'seconds' }) effective_session_lifetime!: number;
  @ApiProperty({ ...int, description: 'seconds' }) effective_session_lifetime_max!: number;
}

export class TenantCreatedView extends TenantView {
  @ApiProperty({ description: 'as given (not masked)' }) declare ssh_key: string;
  @ApiProperty({ format: 'uuid', description: 'shown once' }) api_key!: string;
}

export class TenantUpdatedView extends TenantView {
  @ApiProperty({ type: String, ...maybe, description: 'a new key (shown once), masked after other changes, null after retiring or reactivating' }) api_key!: string | null;
}

/** A node as a session lists it (Duffy v3's SessionNodeModel). */
export class SessionNodeView {
  @ApiProperty(int) id!: number;
  @ApiProperty() hostname!: string;
  @ApiProperty({ type: String, ...maybe }) ipaddr!: string | null;
  @ApiProperty({ type: String, ...maybe, description: "the admins' note: shown to admins on GET /nodes only" }) comment!: string | null;
  @ApiProperty() pool!: string;
  @ApiProperty() reusable!: boolean;
  @ApiProperty({ ...anyObject, description: 'keys that look like credentials are shown to admins only' }) data!: Record<string, unknown>;
  // OpenAPI 3.0.3: a nullable enum lists null among its values.
  @ApiProperty({ type: String, enum: [...MACHINE_STATES, null], ...maybe, description: 'null once the session has ended' }) state!: string | null;
}

export class NodeView extends SessionNodeView {
  @ApiProperty({ enum: MACHINE_STATES }) declare state: string;
  @ApiProperty(time) created_at!: string;
  @ApiProperty({ ...time, ...maybe }) retired_at!: string | null;
  @ApiProperty() active!: boolean;
  @ApiProperty({ ...anyObject, description: 'Duffy extension: cpus, ram_gb, disk_gb, cpu_model and any other key' }) hardware!: Record<string, unknown>;
  @ApiProperty({ enum: ['in-service', 'draining', 'maintenance', 'quarantined', 'retired'], description: 'Duffy extension' }) service!: string;
  @ApiProperty({ type: String, ...maybe, description: 'Duffy extension' }) service_reason!: string | null;
}

export class SessionView {
  @ApiProperty(int) id!: number;
  @ApiProperty(time) created_at!: string;
  @ApiProperty({ ...time, ...maybe }) retired_at!: string | null;
  @ApiProperty() active!: boolean;
  @ApiProperty({ ...time, ...maybe, description: 'null while the request waits in the queue (its lease starts when served)' }) expires_at!: string | null;
  @ApiProperty() tenant!: TenantView;
  @ApiProperty({ ...anyObject, description: 'nodes_specs, and Duffy extensions: queue, rejected, ended, failed, affinity, artifacts, artifacts_incomplete' })
  data!: Record<string, unknown>;
  @ApiProperty({ type: [SessionNodeView] }) nodes!: SessionNodeView[];
}

class PoolLevels {
  @ApiProperty({ type: 'object', description: 'machines per level: Duffy v3\'s five, then Duffy\'s own', properties: Object.fromEntries([...LEVELS, ...EXTRA_LEVELS].map((l) => [l, { type: 'integer', minimum: 0 }])), required: [...LEVELS] })
  levels!: Record<string, number>;
}

export class PoolView {
  @ApiProperty() name!: string;
  @ApiProperty({ name: 'fill-level', ...int, minimum: 0 }) 'fill-level'!: number;
}

export class PoolLevelsView extends PoolView {
  @ApiProperty({ type: PoolLevels }) levels!: PoolLevels;
}

export class PoolProfileView extends PoolView {
  @ApiProperty({ enum: ['baremetal', 'vm'] }) type!: string;
  @ApiProperty() arch!: string;
  @ApiProperty() platform!: string;
  @ApiProperty() driver!: string;
  @ApiProperty({ name: 'release-policy', enum: ['reuse', 'rebuild', 'reinstall', 'shutdown'] }) 'release-policy'!: string;
}

export class ArtifactsView {
  @ApiProperty({ enum: ['get'] }) action!: string;
  @ApiProperty(int) session!: number;
  @ApiProperty({ description: 'the release still has files to collect' }) collecting!: boolean;
  @ApiProperty({ type: 'array', items: anyObject }) incomplete!: unknown[];
  @ApiProperty({ type: 'array', items: anyObject }) artifacts!: unknown[];
}

/** `{"action": ..., <key>: <model>}` (or a list of them), as every Duffy v3 answer is. */
function envelope(action: string, key: string, model: { name: string }, list = false) {
  const ref = { $ref: getSchemaPath(model.name) };
  return { type: 'object', required: ['action', key], properties: { action: { type: 'string', enum: [action] }, [key]: list ? { type: 'array', items: ref } : ref } };
}

/** The success answer of a Duffy v3 route: its status and envelope. */
export const ApiAnswer = (status: number, action: 'get' | 'post' | 'put', key: string, model: { name: string }, list = false) =>
  applyDecorators(ApiExtraModels(model as new () => unknown), ApiResponse({ status, description: '', schema: envelope(action, key, model, list) }));

/** What refusals mean, for the statuses a route names. */
const REFUSAL: Record<number, string> = {
  400: 'malformed JSON',
  401: 'missing, garbled or wrong credentials',
  403: 'quota exceeded, admin-only call, retired tenant',
  404: "unknown id, or another tenant's",
  409: 'the ledger changed under the request too often (retry), or a conflict it names',
  413: 'body over 1 MB',
  415: 'a JSON body that is not UTF-8',
  422: 'invalid body, path id or query; no capacity',
  503: 'Duffy cannot take it now (provisioning failed, stopping, its disk): see Retry-After',
};

/** Refusals a route gives besides those of every route (added by describeRefusals). */
export const ApiRefusals = (...statuses: number[]) =>
  applyDecorators(...statuses.map((status) => ApiResponse({ status, description: REFUSAL[status], type: Refusal })));

type Operation = { parameters?: Array<{ in: string; name: string; schema?: Record<string, unknown> }>; requestBody?: unknown; security?: unknown[]; responses: Record<string, unknown> };

/**
 * What holds for every route, said once instead of on each: a Basic-auth route may answer 401 and 403, a body may be
 * malformed or refused, a path id is an integer that may be unknown, and a stop answers 503. Request bodies are
 * described as the server reads them: no unknown field, and an optional field may be null ("not given").
 */
export function describeRefusals(openapi: OpenAPIObject): OpenAPIObject {
  const doc = openapi as unknown as { paths: Record<string, Record<string, Operation>>; components?: { schemas?: Record<string, Record<string, unknown>> } };
  const refusal = { description: '', content: { 'application/json': { schema: { $ref: getSchemaPath(Refusal.name) } } } };
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const op of Object.values(item)) {
      const statuses = [503];
      if (op.security === undefined) statuses.push(401, 403);
      if (op.requestBody) statuses.push(400, 413, 415, 422);
      for (const p of op.parameters ?? []) {
        if (p.in !== 'path' || p.name !== 'id') continue;
        p.schema = { type: 'integer', minimum: 0, maximum: MAX_ID };
        statuses.push(404, 422);
      }
      // The legacy calls answer their own shapes (cico reads them), and a stop lets them through.
      if (/^\/(Node\/|Inventory)/.test(path)) continue;
      for (const status of statuses) op.responses[status] ??= { ...refusal, description: REFUSAL[status] };
    }
  }
  for (const [name, schema] of Object.entries(doc.components?.schemas ?? {})) {
    if (!name.endsWith('Dto')) continue;
    schema.additionalProperties = false;
    const required = new Set((schema.required as string[] | undefined) ?? []);
    for (const [key, prop] of Object.entries((schema.properties ?? {}) as Record<string, Record<string, unknown>>)) {
      if (required.has(key)) continue;
      // `nullable` goes with a type: on a oneOf, on its first branch (a nested object's null is not said).
      if (prop.type) prop.nullable = true;
      else if (Array.isArray(prop.oneOf)) (prop.oneOf[0] as Record<string, unknown>).nullable = true;
    }
  }
  return openapi;
}
