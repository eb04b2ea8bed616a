// A sample backend as its own process, so the benchmark can pin it to a CPU:
//   node --import tsx bench/production-impact/backend.ts <name> <port> [delayMs]
// Prints "listening" once it accepts connections; stops on SIGTERM.
import { SampleBackend } from '@mirrorplane/sample-backend';

const [name = 'backend', portText = '0', delayText = '0'] = process.argv.slice(2);
const backend = new SampleBackend({ name, delayMs: Number(delayText) });
const port = await backend.listen(Number(portText));
process.stdout.write(`listening ${port}\n`);
process.on('SIGTERM', () => void backend.close().then(() => process.exit(0)));
