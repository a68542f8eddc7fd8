import { Type } from 'class-transformer';
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
  ValidateIf,
  ValidateNested,
} from 'class-validator';
import { MACHINE_STATES, MACHINE_TYPES, type MachineState, type MachineType } from '../ledger/events.js';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** One request can't ask for more than this many machines; quota applies on top. */
export const MAX_QUANTITY = 1000;

export class NodesSpecDto {
  @ValidateIf((o) => o.type === undefined && o.arch === undefined && o.platform === undefined)
  @IsString({ message: 'pool must be a string (or give type/arch/platform instead)' })
  @Matches(NAME, { message: 'pool must be a pool name' })
  pool?: string;

  @IsOptional() @IsIn(MACHINE_TYPES, { message: 'type must be baremetal or vm' }) type?: MachineType;
  @IsOptional() @IsString() @MaxLength(64) arch?: string;
  @IsOptional() @IsString() @MaxLength(64) platform?: string;

  @IsInt({ message: 'quantity must be an integer' })
  @Min(1, { message: 'quantity must be at least 1' })
  @Max(MAX_QUANTITY, { message: `quantity must be at most ${MAX_QUANTITY}` })
  quantity!: number;
}

export class SessionCreateDto {
  @IsOptional() @IsInt({ message: 'tenant_id must be an integer or null' }) tenant_id?: number | null;

  @IsArray({ message: 'nodes_specs must be a list' })
  @ArrayMinSize(1, { message: 'nodes_specs must not be empty' })
  @ArrayMaxSize(32)
  @ValidateNested({ each: true })
  @Type(() => NodesSpecDto)
  nodes_specs!: NodesSpecDto[];
}

export class SessionUpdateDto {
  @IsOptional() @IsBoolean({ message: 'active must be a boolean' }) active?: boolean;
  @IsOptional() @IsString({ message: 'expires_at must be a string like "+2h" or an ISO 8601 time' }) @MaxLength(64) expires_at?: string;
}

export class TenantCreateDto {
  @Matches(NAME, { message: 'name must be 1-128 letters, digits, dot, dash or underscore' }) name!: string;
  @IsOptional() @IsBoolean() is_admin?: boolean;
  @IsString() @MaxLength(16384) ssh_key!: string;
  @IsOptional() @IsInt() @Min(0) @Max(100000) node_quota?: number | null;
  @IsOptional() @IsInt() @Min(60) session_lifetime?: number | null;
  @IsOptional() @IsInt() @Min(60) session_lifetime_max?: number | null;
}

export class TenantUpdateDto {
  @IsOptional() @IsString() @MaxLength(16384) ssh_key?: string;
  @IsOptional() @IsInt() @Min(0) @Max(100000) node_quota?: number | null;
  @IsOptional() @IsInt() @Min(60) session_lifetime?: number | null;
  @IsOptional() @IsInt() @Min(60) session_lifetime_max?: number | null;
  @IsOptional() @IsBoolean() active?: boolean;
  @IsOptional() @IsBoolean() api_key?: boolean;
}

export class NodeCreateDto {
  @Matches(/^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$/, { message: 'hostname must be a DNS name' }) hostname!: string;
  @IsOptional() @IsIP(undefined, { message: 'ipaddr must be an IP address' }) ipaddr?: string | null;
  @Matches(NAME, { message: 'pool must be a pool name' }) pool!: string;
  @IsOptional() @IsBoolean() reusable?: boolean;
  @IsOptional() @IsObject() data?: Record<string, unknown>;
  @IsOptional() @IsIn(MACHINE_STATES) state?: MachineState;
}
