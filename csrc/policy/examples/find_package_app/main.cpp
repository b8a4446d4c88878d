// policy_app POLICY: loads an exported policy and prints its dims, backend and the action for the
// normalisation mean (one line of JSON). Errors: one line on stderr, exit 2.
#include <gail_robot/policy.hpp>

#include <cstdio>
#include <exception>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: policy_app POLICY\n");
    return 2;
  }
  try {
    gail_robot::Policy policy = gail_robot::Policy::load(argv[1]);
    std::vector<float> obs(static_cast<std::size_t>(policy.obs_dim()), 0.0f);
    std::vector<float> action(static_cast<std::size_t>(policy.act_dim()));
    const bool ok = policy.act(std::span<const float>(obs), std::span<float>(action));
    std::printf("{\"env_id\": \"%s\", \"obs_dim\": %d, \"act_dim\": %d, \"backend\": \"%s\", \"ok\": %s, \"action\": [",
                policy.meta().env_id.c_str(), policy.obs_dim(), policy.act_dim(), policy.backend().c_str(),
                ok ? "true" : "false");
    for (std::size_t j = 0; j < action.size(); ++j) std::printf("%s%.9g", j ? ", " : "", action[j]);
    std::printf("]}\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "policy_app: error: %s\n", e.what());
    return 2;
  }
}
