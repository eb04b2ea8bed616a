import { NginxMirror, findNginx, type NginxMirrorOptions } from '@mirrorplane/sample-backend';

export { NginxMirror, findNginx };

/**
 * A real nginx (the Debian package) as the mirroring proxy, on a free loopback port, with the
 * same configuration the demo and the production-impact benchmark use. The caller stops it.
 */
export async function startNginx(options: NginxMirrorOptions): Promise<NginxMirror> {
  if (!findNginx(options.binary)) {
    throw new Error('the end-to-end tests need nginx: apt-get install -y nginx (it is started as a plain process, no service)');
  }
  return NginxMirror.start(options);
}
