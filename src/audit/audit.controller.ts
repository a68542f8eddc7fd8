import { Controller, Get, UseGuards } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { BasicAuthGuard } from '../http/auth.js';
import { keyId } from './checkpoint.js';
import { CheckpointService } from './checkpoint.service.js';

/** Tree heads for auditors: any tenant may collect them and compare them over time (RFC 9162 gossip). */
@ApiTags('audit')
@Controller('audit')
@UseGuards(BasicAuthGuard)
export class AuditController {
  constructor(private readonly checkpoints: CheckpointService) {}

  @ApiOperation({ summary: "a signed checkpoint (Merkle tree head) of the ledger; save it and later run `duffy audit verify --checkpoint`" })
  @Get('checkpoint')
  checkpoint() {
    return this.checkpoints.current();
  }

  @ApiOperation({ summary: 'the Ed25519 public key that signs checkpoints' })
  @Get('public-key')
  publicKey() {
    return { algorithm: 'ed25519', format: 'spki-der-base64', publicKey: this.checkpoints.publicKey, keyId: keyId(this.checkpoints.publicKey) };
  }
}
