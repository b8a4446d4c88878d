// Real-time scheduling of a control thread (gail-robot-controller and the realtime_loop example).
#pragma once

namespace gail_robot {

// Pins the calling thread to `cpu` (if >= 0) and, if `rt_priority` > 0, locks the process memory and
// asks for SCHED_FIFO at that priority (needs CAP_IPC_LOCK / CAP_SYS_NICE). One-line runtime_error.
void apply_scheduling(int cpu, int rt_priority);

}  // namespace gail_robot
