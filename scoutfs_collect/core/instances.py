"""The plugin instances of one run: what the profile configured, built once, with the
outcome of every phase each one went through (the runner's bookkeeping)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from scoutfs_collect.archive.manifest import PluginRecord
from scoutfs_collect.core.lifecycle import Phase, Refusal, refusal
from scoutfs_collect.core.profile import InstanceSpec, Profile
from scoutfs_collect.core.registry import PluginType, Registry
from scoutfs_collect.plugin.api import PluginContext, Target
from scoutfs_collect.plugin.options import build
from scoutfs_collect.plugin.timed import CallOutcome

log = logging.getLogger("scoutfs_collect")


@dataclasses.dataclass
class PluginInstance:
    """One configured plugin: its spec, type, object, context, manifest record and the
    outcome of each phase it went through (each phase at most once)."""

    spec: InstanceSpec
    ptype: PluginType
    plugin: Any
    ctx: PluginContext
    record: PluginRecord
    timeout: float
    outcomes: Dict[Phase, CallOutcome] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_collector(self) -> bool:
        return self.spec.kind == "collector"

    def refusal(self, phase: Phase) -> Optional[Refusal]:
        """Why ``phase`` may not run now (the transition table), or None."""
        return refusal(self.spec.kind, self.outcomes, phase)

    def ran(self, phase: Phase) -> bool:
        return phase in self.outcomes

    def succeeded(self, phase: Phase) -> bool:
        outcome = self.outcomes.get(phase)
        return outcome is not None and outcome.ok

    def returned(self, phase: Phase) -> bool:
        outcome = self.outcomes.get(phase)
        return outcome is not None and outcome.returned

    def record_outcome(self, phase: Phase, outcome: CallOutcome) -> None:
        """Keep a finished phase's outcome and put its timing and error in the manifest
        (the log line and the ``error`` event come from the invoker)."""
        self.outcomes[phase] = outcome
        self.record.phases[phase.value] = round(outcome.seconds, 6)
        if not outcome.ok:
            self.record.record_error(f"{phase.value}: {outcome.error}", timed_out=outcome.timed_out)


def build_instances(
    profile: Profile, registry: Registry, target: Target, dry_run: bool
) -> List[PluginInstance]:
    """One PluginInstance per profile entry (collectors first), options already validated."""
    out = []
    for spec in profile.collectors + profile.triggers:
        ptype = registry.get(spec.type_name, spec.kind)
        options = build(ptype.cls.Options, spec.options)
        ctx = PluginContext(
            name=spec.name,
            type_name=spec.type_name,
            target=target,
            workdir=Path("/nonexistent-until-start"),
            output_dir=Path(profile.settings.output_dir),
            dry_run=dry_run,
            log=logging.getLogger(f"scoutfs_collect.plugin.{spec.name}"),
        )
        out.append(
            PluginInstance(
                spec=spec,
                ptype=ptype,
                plugin=ptype.cls(ctx, options),
                ctx=ctx,
                record=PluginRecord(kind=spec.kind, type=spec.type_name),
                timeout=spec.timeout or profile.settings.phase_timeout,
            )
        )
    return out
