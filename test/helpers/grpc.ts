import { connect, createServer, type ClientHttp2Session, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';

/**
 * A gRPC service with every call kind, messages as raw bytes: identity (de)serializers, so a
 * test sends and checks exact message bytes with no .proto. Real `@grpc/grpc-js` servers play
 * production and staging; `GrpcTee` plays Envoy's mirror (forward to production, copy to the
 * ingress over h2c).
 */

const bytes = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };

export const ECHO_SERVICE: grpc.ServiceDefinition = {
  unary: {
    path: '/mirror.test.Echo/Unary',
    requestStream: false,
    responseStream: false,
    requestSerialize: bytes.serialize,
    requestDeserialize: bytes.deserialize,
    responseSerialize: bytes.serialize,
    responseDeserialize: bytes.deserialize,
  },
  serverStream: {
    path: '/mirror.test.Echo/ServerStream',
    requestStream: false,
    responseStream: true,
    requestSerialize: bytes.serialize,
    requestDeserialize: bytes.deserialize,
    responseSerialize: bytes.serialize,
    responseDeserialize: bytes.deserialize,
  },
  clientStream: {
    path: '/mirror.test.Echo/ClientStream',
    requestStream: true,
    responseStream: false,
    requestSerialize: bytes.serialize,
    requestDeserialize: bytes.deserialize,
    responseSerialize: bytes.serialize,
    responseDeserialize: bytes.deserialize,
  },
  bidi: {
    path: '/mirror.test.Echo/Bidi',
    requestStream: true,
    responseStream: true,
    requestSerialize: bytes.serialize,
    requestDeserialize: bytes.deserialize,
    responseSerialize: bytes.serialize,
    responseDeserialize: bytes.deserialize,
  },
};

/** One call a server received: its method path, its metadata (as grpc-js hands it over) and its messages. */
export interface ReceivedCall {
  path: string;
  metadata: Record<string, (string | Buffer)[]>;
  messages: Buffer[];
}

function metadataOf(m: grpc.Metadata): Record<string, (string | Buffer)[]> {
  const out: Record<string, (string | Buffer)[]> = {};
  for (const key of Object.keys(m.getMap())) out[key] = m.get(key);
  return out;
}

/** A grpc-js server of `ECHO_SERVICE` that records calls and answers with `reply(message)`; `failWith` turns every call into that status. */
export class EchoServer {
  readonly calls: ReceivedCall[] = [];
  failWith: grpc.status | null = null;
  readonly #server: grpc.Server;
  readonly port: number;

  private constructor(server: grpc.Server, port: number) {
    this.#server = server;
    this.port = port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  static async start(): Promise<EchoServer> {
    const server = new grpc.Server();
    let self: EchoServer | null = null;
    const record = (path: string, metadata: grpc.Metadata, messages: Buffer[]): grpc.ServiceError | null => {
      self?.calls.push({ path, metadata: metadataOf(metadata), messages });
      const failWith = self?.failWith ?? null;
      return failWith === null
        ? null
        : Object.assign(new Error('staging is down'), { code: failWith, details: 'staging is down', metadata: new grpc.Metadata() });
    };
    const reply = (m: Buffer): Buffer => Buffer.concat([Buffer.from('re:'), m]);
    server.addService(ECHO_SERVICE, {
      unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
        const error = record(ECHO_SERVICE.unary!.path, call.metadata, [call.request]);
        done(error, error ? undefined : reply(call.request));
      },
      serverStream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        const error = record(ECHO_SERVICE.serverStream!.path, call.metadata, [call.request]);
        if (error) return void call.emit('error', error);
        for (let i = 0; i < 3; i++) call.write(reply(Buffer.concat([call.request, Buffer.from([i])])));
        call.end();
      },
      clientStream: (call: grpc.ServerReadableStream<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
        const messages: Buffer[] = [];
        call.on('data', (m: Buffer) => messages.push(m));
        call.on('end', () => {
          const error = record(ECHO_SERVICE.clientStream!.path, call.metadata, messages);
          done(error, error ? undefined : reply(Buffer.concat(messages)));
        });
      },
      bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        const messages: Buffer[] = [];
        call.on('data', (m: Buffer) => {
          messages.push(m);
          if (self?.failWith === null) call.write(reply(m));
        });
        call.on('end', () => {
          const error = record(ECHO_SERVICE.bidi!.path, call.metadata, messages);
          if (error) return void call.emit('error', error);
          call.end();
        });
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))),
    );
    self = new EchoServer(server, port);
    return self;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#server.tryShutdown(() => resolve()));
  }
}

/** The methods of `ECHO_SERVICE` on a generic grpc-js client. */
export interface EchoClient extends grpc.Client {
  unary(message: Buffer, metadata: grpc.Metadata, done: (error: grpc.ServiceError | null, reply: Buffer) => void): grpc.ClientUnaryCall;
  serverStream(message: Buffer, metadata: grpc.Metadata): grpc.ClientReadableStream<Buffer>;
  clientStream(metadata: grpc.Metadata, done: (error: grpc.ServiceError | null, reply: Buffer) => void): grpc.ClientWritableStream<Buffer>;
  bidi(metadata: grpc.Metadata): grpc.ClientDuplexStream<Buffer, Buffer>;
}

/** A grpc-js client of `ECHO_SERVICE` at `address` (`host:port`). */
export function echoClient(address: string): EchoClient {
  const Client = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
  return new Client(address, grpc.credentials.createInsecure()) as unknown as EchoClient;
}

/** Drops what node's http2 refuses to forward as is (connection-specific fields). */
function forwardable(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name === ':status') continue;
    out[name] = Array.isArray(value) ? value : String(value);
  }
  return out;
}

/**
 * Envoy's request mirror, small: every stream is forwarded to production (its answer goes back
 * to the client) and copied to the ingress over h2c with the same headers, DATA and trailers,
 * `:authority` suffixed with `-shadow` as Envoy does. The copy's answer is ignored.
 */
export class GrpcTee {
  readonly #server: Http2Server;
  readonly #production: ClientHttp2Session;
  readonly #ingress: ClientHttp2Session;
  readonly port: number;

  private constructor(server: Http2Server, production: ClientHttp2Session, ingress: ClientHttp2Session, port: number) {
    this.#server = server;
    this.#production = production;
    this.#ingress = ingress;
    this.port = port;
  }

  static async start(productionUrl: string, ingressUrl: string): Promise<GrpcTee> {
    const production = connect(productionUrl);
    const ingress = connect(ingressUrl);
    production.on('error', () => undefined);
    ingress.on('error', () => undefined);
    const server = createServer();
    server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
      stream.on('error', () => undefined);
      const forward = forwardable(headers);
      // gRPC clients send no request trailers: END_STREAM rides on the last DATA frame.
      const up = production.request(forward);
      const copy = ingress.request({ ...forward, ':authority': `${String(headers[':authority'])}-shadow` });
      up.on('error', () => undefined);
      copy.on('error', () => undefined);
      copy.resume();
      stream.on('data', (chunk: Buffer) => {
        up.write(chunk);
        copy.write(chunk);
      });
      stream.on('end', () => {
        up.end();
        copy.end();
      });
      up.on('response', (h: IncomingHttpHeaders) => stream.respond(forwardable(h), { waitForTrailers: true }));
      let upTrailers: Record<string, string | string[]> = {};
      up.on('trailers', (t: IncomingHttpHeaders) => (upTrailers = forwardable(t)));
      up.on('data', (chunk: Buffer) => stream.write(chunk));
      up.on('end', () => {
        stream.once('wantTrailers', () => stream.sendTrailers(upTrailers));
        stream.end();
      });
    });
    const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
    return new GrpcTee(server, production, ingress, port);
  }

  async close(): Promise<void> {
    this.#production.close();
    this.#ingress.close();
    await new Promise((resolve) => this.#server.close(resolve));
  }
}
