#include "scheduling.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace gail_robot {

void apply_scheduling(int cpu, int rt_priority) {
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set))
      throw std::runtime_error("cannot pin the control thread to cpu " + std::to_string(cpu) + ": " +
                               std::strerror(err));
  }
  if (rt_priority > 0) {
    // Locked memory: no page fault (a disk read, in the worst case) inside the loop.
    if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0)
      throw std::runtime_error(std::string("mlockall failed (needs CAP_IPC_LOCK): ") + std::strerror(errno));
    sched_param param{};
    param.sched_priority = rt_priority;
    if (int err = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param))
      throw std::runtime_error("cannot set SCHED_FIFO priority " + std::to_string(rt_priority) +
                               " (needs CAP_SYS_NICE): " + std::strerror(err));
  }
}

}  // namespace gail_robot
