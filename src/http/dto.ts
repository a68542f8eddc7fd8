import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
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
import { NAME } from '../config/config.js';
import { MACHINE_STATES, MACHINE_TYPES, type MachineState, type MachineType } from '../domain/events.js';

/** One request can't ask for more than this many machines; quota applies on top. */
export const MAX_QUANTITY = 1000;

export class NodesSpecDto {
  @ValidateIf((o) => o.type === undefined && o.arch === undefined && o.platform === undefined)
  @IsString({ message: 'pool must be a string (or give type/arch/platform instead)' })
  @Matches(NAME, { message: 'pool must be a pool name' })
  @ApiPropertyOptional({ description: 'pool name; or give type/arch/platform instead', example: 'metal-intel-x86_64' })
  pool?: string;

  @ApiPropertyOptional({ enum: MACHINE_TYPES, description: 'Duffy extension: any pool of this type' })
  @IsOptional() @IsIn(MACHINE_TYPES, { message: 'type must be baremetal or vm' }) type?: MachineType;
  @ApiPropertyOptional({ example: 'x86_64' }) @IsOptional() @IsString() @MaxLength(64) arch?: string;
  @ApiPropertyOptional({ description: 'platform family, e.g. intel, amd, arm' }) @IsOptional() @IsString() @MaxLength(64) platform?: string;

  @ApiProperty({ minimum: 1, maximum: 1000 })
  @IsInt({ message: 'quantity must be an integer' })
  @Min(1, { message: 'quantity must be at least 1' })
  @Max(MAX_QUANTITY, { message: `quantity must be at most ${MAX_QUANTITY}` })
  quantity!: number;
}

export class SessionCreateDto {
  @ApiPropertyOptional({ type: Number, nullable: true, description: 'admin only: request for another tenant' })
  @IsOptional() @IsInt({ message: 'tenant_id must be an integer or null' }) tenant_id?: number | null;

  @ApiPropertyOptional({ minimum: 0, maximum: 3600, description: 'Duffy extension: seconds to wait in the fair-share queue when no machine is free' })
  @IsOptional()
  @IsInt({ message: 'wait must be an integer number of seconds' })
  @Min(0, { message: 'wait must be at least 0' })
  @Max(3600, { message: 'wait must be at most 3600 seconds' })
  wait?: number;

  @ApiProperty({ type: () => [NodesSpecDto] })
  @IsArray({ message: 'nodes_specs must be a list' })
  @ArrayMinSize(1, { message: 'nodes_specs must not be empty' })
  @ArrayMaxSize(32)
  @ValidateNested({ each: true })
  @Type(() => NodesSpecDto)
  nodes_specs!: NodesSpecDto[];
}

export class SessionUpdateDto {
  @ApiPropertyOptional({ description: 'false: done with the machines' }) @IsOptional() @IsBoolean({ message: 'active must be a boolean' }) active?: boolean;
  @ApiPropertyOptional({ example: '+2h', description: 'extend: +Ns/m/h/d or an ISO 8601 time, clamped to the maximum lifetime' })
  @IsOptional() @IsString({ message: 'expires_at must be a string like "+2h" or an ISO 8601 time' }) @MaxLength(64) expires_at?: string;
}

export class TenantCreateDto {
  @ApiProperty()
  @Matches(NAME, { message: 'name must be 1-128 letters, digits, dot, dash or underscore' }) name!: string;
  @ApiPropertyOptional()
  @IsOptional() @IsBoolean() is_admin?: boolean;
  @ApiProperty()
  @IsString() @MaxLength(16384) ssh_key!: string;
  @ApiPropertyOptional()
  @IsOptional() @IsInt() @Min(0) @Max(100000) node_quota?: number | null;
  @ApiPropertyOptional()
  @IsOptional() @IsInt() @Min(60) session_lifetime?: number | null;
  @ApiPropertyOptional()
  @IsOptional() @IsInt() @Min(60) session_lifetime_max?: number | null;
}

export class TenantUpdateDto {
  @ApiPropertyOptional()
  @IsOptional() @IsString() @MaxLength(16384) ssh_key?: string;
  @ApiPropertyOptional()
  @IsOptional() @IsInt() @Min(0) @Max(100000) node_quota?: number | null;
  @ApiPropertyOptional()
  @IsOptional() @IsInt() @Min(60) session_lifetime?: number | null;
  @ApiPropertyOptional()
  @IsOptional() @IsInt() @Min(60) session_lifetime_max?: number | null;
  @ApiPropertyOptional()
  @IsOptional() @IsBoolean() active?: boolean;
  @ApiPropertyOptional()
  @IsOptional() @IsBoolean() api_key?: boolean;
}

export class NodeCreateDto {
  @ApiProperty()
  @Matches(/^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$/, { message: 'hostname must be a DNS name' }) hostname!: string;
  @ApiPropertyOptional()
  @IsOptional() @IsIP(undefined, { message: 'ipaddr must be an IP address' }) ipaddr?: string | null;
  @ApiProperty()
  @Matches(NAME, { message: 'pool must be a pool name' }) pool!: string;
  @ApiPropertyOptional()
  @IsOptional() @IsBoolean() reusable?: boolean;
  @ApiPropertyOptional()
  @IsOptional() @IsObject() data?: Record<string, unknown>;
  @ApiPropertyOptional()
  @IsOptional() @IsIn(MACHINE_STATES) state?: MachineState;
}
