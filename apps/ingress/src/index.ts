/** @mirrorplane/ingress — the receiving end of the mirror: one stream entry per request. */
export { Ingress, type DropReason } from './ingress.js';
