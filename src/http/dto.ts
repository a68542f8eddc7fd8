import { applyDecorators } from '@nestjs/common';
import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Transform, Type } from 'class-transformer';
import {
  ArrayMaxSize,
  ArrayMinSize,
  IsArray,
  IsBoolean,
  IsIn,
  IsInt,
  IsIP,
  IsObject,
  IsOptional,
  IsString,
  Matches,
  Max,
  MaxLength,
  Min,
  ValidateBy,
  ValidateIf,
  ValidateNested,
} from 'class-validator';
import { isUuid } from '../application/catalog.js';
import { refuse } from '../domain/errors.js';
import { MAX_LIFETIME } from '../domain/decide.js';
import { parseDuration } from '../domain/duration.js';
import { MACHINE_TYPES, MAX_ID, MAX_QUANTITY, MAX_SPEC_NAME, MAX_WAIT, NAME, NAME_RULE, REGISTRABLE_STATES, type MachineState, type MachineType, pydanticInt } from '../domain/events.js';
import { HOST_NAME } from '../domain/world.js';

/**
 * Numbers and booleans written as strings are read as pydantic (Duffy v3) reads them: `"quantity": "2"` from a
 * templated Jenkins body, `"active": "false"` (and a boolean as 0 or 1). Anything else stays as it came and fails
 * validation.
 */
const TRUE_TEXT = new Set(['1', 'on', 't', 'true', 'y', 'yes']);
const FALSE_TEXT = new Set(['0', 'off', 'f', 'false', 'n', 'no']);
const laxInt = Transform(({ value }) => (typeof value === 'string' ? (pydanticInt(value) ?? value) : value));
const laxBool = Transform(({ value }) => {
  const text = typeof value === 'string' ? value.trim().toLowerCase() : typeof value === 'number' ? String(value) : undefined;
  return text !== undefined && TRUE_TEXT.has(text) ? true : text !== undefined && FALSE_TEXT.has(text) ? false : value;
});
/** A yes/no query parameter (`?retired=true`), read as the bodies' booleans are; anything else is a 422 naming it. */
export function queryFlag(name: string, value: unknown): boolean {
  const text = typeof value === 'string' ? value.trim().toLowerCase() : '';
  if (TRUE_TEXT.has(text)) return true;
  if (FALSE_TEXT.has(text)) return false;
  return refuse('invalid', `${name} must be true or false (or 1/0, yes/no), got ${JSON.stringify(String(value).slice(0, 40))}`);
}

/** A boolean of Duffy v3's bodies (Duffy's own extensions take JSON booleans only). */
const Bool = (name: string) => applyDecorators(laxBool, IsOptional(), IsBoolean({ message: `${name} must be a boolean` }));

/*
 * Stacked decorators register bottom-up, and with stopAtFirstError the first registered failure is the answer;
 * applyDecorators registers in the order written. These helpers keep "must be an integer" ahead of its bounds.
 */
const Int = (name: string, min: number, max: number, unit = '') =>
  applyDecorators(
    laxInt,
    IsInt({ message: unit ? `${name} must be a whole number of${unit}` : `${name} must be an integer` }),
    Min(min, { message: `${name} must be at least ${min}${unit}` }),
    Max(max, { message: `${name} must be at most ${max}${unit}` }),
  );
/** An optional integer within [min, max]; a JSON null was already dropped as "not given" (see input.ts). */
const BoundedInt = (name: string, min: number, max: number, unit = '') => applyDecorators(IsOptional(), Int(name, min, max, unit));
const Str = (name: string, max: number) =>
  applyDecorators(IsString({ message: `${name} must be a string` }), MaxLength(max, { message: `${name} must be at most ${max} characters` }));
const OptionalStr = (name: string, max: number) => applyDecorators(IsOptional(), Str(name, max));

/**
 * A tenant's public keys, one per line. A private key is refused before it reaches the ledger, which keeps it for
 * good (append-only): it could never be erased. Control characters would end up in authorized_keys.
 */
const SshKey = (max: number) =>
  applyDecorators(
    Str('ssh_key', max),
    ValidateBy({
      name: 'sshKey',
      validator: {
        validate: (v: unknown) => typeof v !== 'string' || (!PRIVATE_KEY.test(v) && !CONTROL.test(v)),
        defaultMessage: (a) =>
          PRIVATE_KEY.test(String(a?.value))
            ? 'ssh_key holds a private key: give the public one (the .pub file); the ledger would keep it for good'
            : 'ssh_key must not contain control characters other than line breaks and tabs',
      },
    }),
  );
// Any armour: PEM's five dashes, ssh.com's "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----", a PGP key block; and an
// OpenSSH private key's body pasted without its armour ("openssh-key-v1" in base64: a public key's body starts AAAA).
const PRIVATE_KEY = /BEGIN [A-Z0-9 ]*PRIVATE KEY|PuTTY-User-Key-File-|b3BlbnNzaC1rZXktdjE/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

/** Duffy v3's `"reset"` or a UUID, and Duffy's own `true` (the same as "reset"). */
const ApiKeyChange = () =>
  ValidateBy({
    name: 'apiKeyChange',
    validator: {
      validate: (v: unknown) => v === true || v === 'reset' || (typeof v === 'string' && isUuid(v)),
      defaultMessage: () => 'api_key must be "reset" (or true: a new key, shown once) or a UUID to use as the key',
    },
  });

/**
 * A tenant's lease setting: seconds, or a duration as Duffy v3 takes it (`"6h"`, `"1d 12h"`, `"3600"`), within
 * [60 s, 30 days].
 */
const Lifetime = (name: string) =>
  applyDecorators(
    Transform(({ value }) => (typeof value === 'string' ? (parseDuration(value) ?? value) : value)),
    IsOptional(),
    IsInt({ message: `${name} must be whole seconds or a duration like "6h" or "1d 12h"` }),
    Min(60, { message: `${name} must be at least 60 seconds` }),
    Max(MAX_LIFETIME, { message: `${name} must be at most ${MAX_LIFETIME} seconds` }),
  );

/** `pool` is required unless the spec asks by type/arch/platform. */
const PoolUnlessProfile = applyDecorators(
  ValidateIf((o) => o.type === undefined && o.arch === undefined && o.platform === undefined),
  IsString({ message: 'pool must be a string (or give type/arch/platform instead)' }),
  Matches(NAME, { message: 'pool must be a pool name' }),
);

/** Duffy extension: what a spec requires of a machine's `hardware`. */
export class HardwareRequirementDto {
  @ApiPropertyOptional({ type: 'integer', minimum: 1, maximum: 100_000 }) @BoundedInt('min_cpus', 1, 100_000) min_cpus?: number;
  @ApiPropertyOptional({ type: 'integer', minimum: 1, maximum: 1_000_000 }) @BoundedInt('min_ram_gb', 1, 1_000_000) min_ram_gb?: number;
  @ApiPropertyOptional({ type: 'integer', minimum: 1, maximum: 1_000_000_000 }) @BoundedInt('min_disk_gb', 1, 1_000_000_000) min_disk_gb?: number;
  @ApiPropertyOptional({ description: "case-insensitive substring of the machine's cpu_model", example: 'EPYC' }) @OptionalStr('cpu_model', 128) cpu_model?: string;
}

export class NodesSpecDto {
  @ApiPropertyOptional({ description: 'pool name; required unless type, arch or platform is given', example: 'metal-intel-x86_64', pattern: NAME.source })
  @PoolUnlessProfile
  pool?: string;

  @ApiPropertyOptional({ enum: MACHINE_TYPES, description: 'Duffy extension: any pool of this type' })
  @IsOptional() @IsIn(MACHINE_TYPES, { message: 'type must be baremetal or vm' }) type?: MachineType;
  @ApiPropertyOptional({ example: 'x86_64', pattern: NAME.source, maxLength: MAX_SPEC_NAME }) @Matches(NAME, { message: 'arch must be letters, digits, dot, dash or underscore' }) @OptionalStr('arch', MAX_SPEC_NAME) arch?: string;
  @ApiPropertyOptional({ description: 'platform family, e.g. intel, amd, arm', pattern: NAME.source, maxLength: MAX_SPEC_NAME }) @Matches(NAME, { message: 'platform must be letters, digits, dot, dash or underscore' }) @OptionalStr('platform', MAX_SPEC_NAME) platform?: string;

  @ApiProperty({ type: 'integer', minimum: 1, maximum: MAX_QUANTITY })
  @Int('quantity', 1, MAX_QUANTITY)
  quantity!: number;

  @ApiPropertyOptional({ type: () => HardwareRequirementDto, description: 'Duffy extension: only machines whose hardware meets all of these' })
  @IsOptional()
  @ValidateNested()
  @Type(() => HardwareRequirementDto)
  // Registered first (decorators register bottom-up): an array would pass as an object of numbered members.
  @IsObject({ message: 'hardware must be an object like {"min_cpus": 8}' })
  hardware?: HardwareRequirementDto;
}

export class SessionCreateDto {
  @ApiPropertyOptional({ type: 'integer', minimum: 1, maximum: MAX_ID, description: 'admin only: request for another tenant' })
  @BoundedInt('tenant_id', 1, MAX_ID) tenant_id?: number;

  @ApiPropertyOptional({ type: 'integer', minimum: 0, maximum: MAX_WAIT, description: 'Duffy extension: seconds to wait in the fair-share queue when no machine is free' })
  @BoundedInt('wait', 0, MAX_WAIT, ' seconds') wait?: number;

  @ApiProperty({ type: () => [NodesSpecDto], minItems: 1, maxItems: 32 })
  @ValidateNested({ each: true })
  @Type(() => NodesSpecDto)
  // Checked bottom-up with stopAtFirstError: a list first, then its size, then each element.
  // A list inside the list (`[[]]`), null or a string would slip past ValidateNested: each must be an object.
  @IsObject({ each: true, message: 'nodes_specs[] must each be an object like {"pool": "...", "quantity": 1}' })
  @ArrayMaxSize(32, { message: 'nodes_specs must have at most 32 specs' })
  @ArrayMinSize(1, { message: 'nodes_specs must not be empty' })
  @IsArray({ message: 'nodes_specs must be a list' })
  nodes_specs!: NodesSpecDto[];
}

/**
 * A JSON number in `expires_at` is a Unix time, as pydantic reads one for Duffy v3 (seconds; milliseconds above 2e10):
 * taken as its digits are, so a negative one is refused as signed digits are (`-60` means no moment of 1969).
 */
const unixTimeNumber = Transform(({ value }) => (typeof value !== 'number' ? value : Object.is(value, -0) ? '-0' : String(value)));

export class SessionUpdateDto {
  @ApiPropertyOptional({ description: 'false: done with the machines' }) @Bool('active') active?: boolean;
  @ApiPropertyOptional({ example: '+2h', description: 'extend: +Ns/m/h/d or an ISO 8601 time, clamped to the maximum lifetime' })
  @IsOptional() @MaxLength(64, { message: 'expires_at must be at most 64 characters' }) @IsString({ message: 'expires_at must be a string like "+2h", an ISO 8601 time or a Unix time' }) @unixTimeNumber expires_at?: string;
}

/** A tenant's limits, the same when it is created and when it is changed. */
class TenantLimitsDto {
  // At least 1, as Duffy v3 (`Field(gt=0)`): its TenantModel cannot parse a tenant with quota 0, nor a list holding one.
  @ApiPropertyOptional({ type: 'integer', minimum: 1, maximum: 100000 })
  @BoundedInt('node_quota', 1, 100000) node_quota?: number;
  @ApiPropertyOptional({ description: 'seconds (60 to 30 days), or a duration like "6h"', oneOf: [{ type: 'integer' }, { type: 'string' }] })
  @Lifetime('session_lifetime') session_lifetime?: number;
  @ApiPropertyOptional({ description: 'seconds (60 to 30 days), or a duration like "12h"', oneOf: [{ type: 'integer' }, { type: 'string' }] })
  @Lifetime('session_lifetime_max') session_lifetime_max?: number;
}

export class TenantCreateDto extends TenantLimitsDto {
  @ApiProperty({ pattern: NAME.source })
  @Matches(NAME, { message: `name must be ${NAME_RULE}` }) name!: string;
  @ApiPropertyOptional()
  @Bool('is_admin') is_admin?: boolean;
  @ApiProperty()
  @SshKey(16384) ssh_key!: string;
}

export class TenantUpdateDto extends TenantLimitsDto {
  @ApiPropertyOptional()
  @IsOptional() @SshKey(16384) ssh_key?: string;
  @ApiPropertyOptional()
  @Bool('active') active?: boolean;
  @ApiPropertyOptional({ description: '"reset" (or true): issue a new API key, shown once; a UUID: use that key (Duffy v3)', oneOf: [{ type: 'string' }, { type: 'boolean' }] })
  @IsOptional() @ApiKeyChange() api_key?: boolean | string;
}

export class NodeCreateDto {
  @ApiProperty({ description: 'a DNS name' })
  @Matches(HOST_NAME, { message: 'hostname must be a DNS name' }) hostname!: string;
  @ApiPropertyOptional()
  @IsOptional() @IsIP(undefined, { message: 'ipaddr must be an IP address' }) ipaddr?: string;
  @ApiProperty({ pattern: NAME.source })
  @Matches(NAME, { message: 'pool must be a pool name' }) pool!: string;
  @ApiPropertyOptional()
  @Bool('reusable') reusable?: boolean;
  @ApiPropertyOptional({ description: "Duffy v3's free-text note on the node" })
  @OptionalStr('comment', 1024) comment?: string;
  @ApiPropertyOptional({ description: 'free-form; tenants never see keys that look like credentials (see nodeView)' })
  @IsOptional() @IsObject({ message: 'data must be an object' }) data?: Record<string, unknown>;
  @ApiPropertyOptional({ enum: REGISTRABLE_STATES })
  @IsOptional() @IsIn(REGISTRABLE_STATES, { message: `state must be one of ${REGISTRABLE_STATES.join(', ')}` }) state?: MachineState;
  @ApiPropertyOptional({ description: 'cpus, ram_gb, disk_gb, cpu_model and any other key', example: { cpus: 32, ram_gb: 256, disk_gb: 960, cpu_model: 'AMD EPYC 7313' } })
  @IsOptional() @IsObject({ message: 'hardware must be an object' }) hardware?: Record<string, string | number | boolean>;
}

/** PUT /nodes/{id} (admin): `{"maintenance": true, "reason": "disk swap"}`, `{"maintenance": false}`, `{"retired": true}` or `{"hardware": {"ram_gb": 256}}`. */
export class NodeServiceDto {
  @ApiPropertyOptional({ type: Boolean, description: 'true: hand it out no more (a held node drains); false: back in service, also out of quarantine' })
  @IsOptional() @IsBoolean({ message: 'maintenance must be a boolean' }) maintenance?: boolean | null;
  @ApiPropertyOptional({ type: Boolean, description: 'true: out of service for good (its history stays in the ledger)' })
  @IsOptional() @IsBoolean({ message: 'retired must be a boolean' }) retired?: boolean | null;
  @ApiPropertyOptional({ description: "the node's hardware as it is now (cpus, ram_gb, disk_gb, cpu_model, any other key): replaces what the ledger says", example: { cpus: 32, ram_gb: 256 } })
  @IsOptional() @IsObject({ message: 'hardware must be an object' }) hardware?: Record<string, string | number | boolean> | null;
  @ApiPropertyOptional({ type: String, maxLength: 1024, example: 'disk swap' }) @OptionalStr('reason', 1024) reason?: string | null;
}
