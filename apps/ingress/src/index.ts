/** @mirrorplane/ingress — the receiving end of the mirror: one stream entry per request. */
export { Ingress, INGRESS_TOKEN_HEADER, type DropReason } from './ingress.js';
export { RequestParser, type ParsedRequest, type RequestHead, type Refusal, type ParseEvent, type ParserLimits } from './http1-parser.js';
