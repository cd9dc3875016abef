// Validates the Prometheus Operator objects of a rendered manifest (JSON
// list on stdin) against their CRDs' OpenAPI schemas, as compiled by
// @kubernetes-models/prometheus-operator: types, required fields, enums and
// patterns. Like the API server, these schemas do not reject unknown
// fields. Prints one line per object; exits 1 on any invalid object, and 2
// when an object of an expected kind is missing.
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const models = { ServiceMonitor, PrometheusRule };
const objects = JSON.parse(readFileSync(0, "utf8"));
const seen = new Set();
let failed = 0;
for (const o of objects) {
  if (o.apiVersion !== "monitoring.coreos.com/v1") continue;
  const Model = models[o.kind];
  if (!Model) {
    console.log(`ERROR no schema here for ${o.kind}/${o.metadata.name}`);
    failed = 1;
    continue;
  }
  seen.add(o.kind);
  try {
    new Model(o).validate();
    console.log(`ok ${o.kind}/${o.metadata.name} (CRD schema)`);
  } catch (e) {
    console.log(`ERROR ${o.kind}/${o.metadata.name}: ${e.message}`);
    failed = 1;
  }
}
for (const kind of Object.keys(models)) {
  if (!seen.has(kind)) {
    console.log(`ERROR no ${kind} in the rendered manifest`);
    process.exitCode = 2;
  }
}
if (failed) process.exitCode = 1;
