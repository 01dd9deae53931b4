"""`--precision auto`: the fastest engine on this device that keeps the user's accuracy goal, per runtime.

Takes the export stage's fp32 `EngineJob`, the request's goal (`goal.AccuracyGoal`) and its labelled images; builds
the runtime's candidates (`candidates`: fp32/fp16/bf16, int8 per calibration method, the runtime's own int8
variants, int8 with layers kept in float, a Q/DQ placement pruned where int8 is not faster), gates each one as the
export stage gates an engine (`trial`), ranks the layers by the noise each adds and returns the worst to float
until the goal is met (`mixed`), times the candidates interleaved (`deploy.timing`), and hands the stage the winner
with a typed record of every candidate (`record`). `search` runs the steps in order.
"""
