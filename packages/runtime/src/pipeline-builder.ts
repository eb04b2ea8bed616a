import { Counter, type Metric } from 'prom-client';
import { compileRules, composePipeline, type CompiledPipeline, type Config, type Pipeline, type PipelineObserver } from '@mirrorplane/core';
import { loadHooks } from './hooks.js';
import type { Logger } from './logger.js';
import { createRecorder } from './recording.js';
import { buildProductionStage } from './production-stage.js';

/** A worker's pipeline and the metrics its stages keep, for the worker's registry. */
export interface BuiltPipeline {
  pipeline: CompiledPipeline;
  /** Register each in the worker's registry: `worker.metrics.registerMetric(m)`. */
  metrics: Metric[];
}

/**
 * Builds the pipeline a worker runs, once, at start-up: the config's rules, then the user's
 * hooks module, then recording (last, so it records what the other stages did). Throws
 * `ConfigError` for a hooks module that cannot be loaded, and closes what it built first.
 */
export async function buildPipeline(config: Config, logger: Logger): Promise<BuiltPipeline> {
  const applied = new Counter({
    name: 'mirrorplane_worker_rule_applied_total',
    help: 'Requests a rule matched and shaped, by rule',
    labelNames: ['rule'],
    registers: [],
  });
  const dropped = new Counter({
    name: 'mirrorplane_worker_pipeline_dropped_total',
    help: 'Requests not replayed by decision of a stage, by rule name (or hooks) and reason (rule, sample, hook)',
    labelNames: ['by', 'reason'],
    registers: [],
  });
  const recorded = new Counter({ name: 'mirrorplane_worker_recorded_total', help: 'Recording lines written', registers: [] });
  const recordingLost = new Counter({
    name: 'mirrorplane_worker_recording_lost_total',
    help: 'Recording lines lost (queue over maxQueuedBytes, or a write error)',
    registers: [],
  });
  const limited = new Counter({
    name: 'mirrorplane_worker_rule_limited_total',
    help: 'Rule edits skipped because the request passed a bound (json_too_large, json_too_deep); the request was sent unedited',
    labelNames: ['rule', 'reason'],
    registers: [],
  });
  const observer: PipelineObserver = {
    applied: (rule) => applied.inc({ rule }),
    limited: (rule, reason) => {
      limited.inc({ rule, reason });
      logger.debug({ rule, reason }, 'rule edit skipped: input past its bound');
    },
    dropped: (by, reason) => {
      dropped.inc({ by, reason });
      logger.debug({ by, reason }, 'request dropped by the pipeline');
    },
  };
  const stages: Pipeline[] = [];
  const extraMetrics: Metric[] = [];
  try {
    // Production responses first: ID patterns are written against production's paths, before rules rewrite them.
    if (config.idMapping || config.compare) {
      const built = buildProductionStage(config, logger);
      stages.push(built.pipeline);
      extraMetrics.push(...built.metrics);
    }
    if (config.rules.length > 0)
      stages.push(
        compileRules(config.rules, { origins: new Set(Object.keys(config.origins)), observer, maxDecodedBytes: config.productionResponses.maxDecodedBytes }),
      );
    if (config.hooks) stages.push(await loadHooks(config.hooks, { config, logger, observer }));
    if (config.recording) {
      stages.push(
        createRecorder({
          settings: config.recording,
          config,
          logger: logger.child({ component: 'recording' }),
          onWritten: (n) => recorded.inc(n),
          onLost: (n) => recordingLost.inc(n),
        }),
      );
    }
  } catch (error) {
    await composePipeline(stages).close();
    throw error;
  }
  if (stages.length > 0) {
    logger.info(
      { rules: config.rules.length, hooks: config.hooks, recording: config.recording?.dir ?? null, origins: Object.keys(config.origins) },
      'pipeline built',
    );
  }
  return { pipeline: composePipeline(stages), metrics: [applied, dropped, limited, recorded, recordingLost, ...extraMetrics] };
}
