// One of many node processes started at once, each asking npm's get-port for the same
// preferred port and then listening on what it got, as a dev server would.
//
// usage: node get-port-race.mjs GET_PORT_INDEX_JS PORT
// prints one line: "PORT ok" once it listens, or "PORT CODE" when the listen failed (say,
// EADDRINUSE: another process was given the same port). It keeps the port until its standard
// input closes, so that the processes started after it find the port taken.
import net from 'node:net';
import {pathToFileURL} from 'node:url';

const [modulePath, portArg] = process.argv.slice(2);
const {default: getPort} = await import(pathToFileURL(modulePath).href);

const port = await getPort({port: Number.parseInt(portArg, 10)});
const server = net.createServer();
server.once('error', error => {
	console.log(`${port} ${error.code}`);
});
server.listen({port, host: '127.0.0.1'}, () => {
	console.log(`${port} ok`);
});
process.stdin.on('data', () => {});
process.stdin.on('end', () => process.exit(0));
