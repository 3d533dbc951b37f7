"""The automation sensor: an asset with an `automation_condition` (a component instance with
`automation_condition: "{{ dg.AutomationCondition.eager() }}"` follows its input) runs under the daemon with no
setup. Dagster's own default sensor starts stopped and its runs lack the server tag that the run queue limits per
server set (deploy/dagster.yaml); this one runs from the start and tags its runs. The shipped assets have no
condition: it requests nothing for them."""

import dagster as dg

from comfy_pipeline.defs.resources import SERVER_TAG, gpu_pool

comfy_automation_sensor = dg.AutomationConditionSensorDefinition(
    "comfy_automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    run_tags={SERVER_TAG: gpu_pool()},
    minimum_interval_seconds=30,
    description="Materializes the assets whose automation_condition says so (e.g. eager: after their input).",
)
