"""Damped-least-squares differential inverse kinematics for a MuJoCo site (position + orientation).

One job: given the current state and a Cartesian target pose of a site, return joint position targets
for the arm's position servos. The 6-D task (3 position + 3 orientation rows) uses the site Jacobian
from ``mujoco.mj_jacSite``; the step is ``dq = J^T (J J^T + lambda^2 I)^-1 e`` (damped least squares,
well behaved near singularities), and for a redundant arm a null-space term pulls the joints toward a
rest posture without disturbing the end-effector.

The linear algebra runs in MuJoCo's own routines (``mju_mulMatMatT``, ``mju_cholFactor``,
``mju_cholSolve``, ``mju_mulMatVec``, ``mju_mulMatTVec``) rather than NumPy's BLAS/LAPACK, so that the
C++ controller (``csrc/controller/arm.cpp``), calling the same functions of the same ``libmujoco``,
reproduces this controller bit for bit (docs/DESIGN.md §5.1). ``J J^T + lambda^2 I`` is symmetric
positive definite, so a Cholesky solve is exact where ``numpy.linalg.solve``'s LU was.
"""

from __future__ import annotations

import mujoco
import numpy as np


class DifferentialIK:
    """Joint targets that move one site toward a Cartesian pose.

    Args:
        model: the MuJoCo model.
        site_name: the controlled site (the tool centre point).
        joint_names: the arm's hinge joints, in actuator order.
        rest_qpos: ``(n,) float64`` posture the null-space term pulls toward.
        damping: lambda of the damped least squares (metres / radians); larger is smoother, less exact.
        orientation_weight: weight of the orientation rows relative to the position rows (metres per
            radian); it trades position against orientation accuracy when both cannot be met.
        null_gain: fraction of the posture error corrected per call through the null space.
        max_joint_step: clip of each joint's step per call (radians), bounding motion far from the target.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        site_name: str,
        joint_names: list[str],
        rest_qpos: np.ndarray,
        damping: float = 0.02,
        orientation_weight: float = 0.3,
        null_gain: float = 0.05,
        max_joint_step: float = 0.25,
    ) -> None:
        self.model = model
        self.site_id = int(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site_name))
        if self.site_id < 0:
            raise ValueError(f"model has no site named {site_name!r}")
        joint_ids = [int(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n)) for n in joint_names]
        if min(joint_ids) < 0:
            raise ValueError(f"model lacks one of the joints {joint_names}")
        self.qpos_ids = np.array([model.jnt_qposadr[j] for j in joint_ids])
        self.dof_ids = np.array([model.jnt_dofadr[j] for j in joint_ids])
        # The controller runs 5 times per env step: a contiguous block is read as a slice (a view), which
        # costs far less than fancy indexing; the values are the same.
        self._qpos_index = _as_slice(self.qpos_ids)
        self._dof_index = _as_slice(self.dof_ids)
        self.joint_low = model.jnt_range[joint_ids, 0].copy()
        self.joint_high = model.jnt_range[joint_ids, 1].copy()
        self.rest_qpos = np.asarray(rest_qpos, dtype=np.float64).copy()
        if self.rest_qpos.shape != (len(joint_ids),):
            raise ValueError(f"rest_qpos has shape {self.rest_qpos.shape}, expected ({len(joint_ids)},)")
        self.damping = float(damping)
        self.orientation_weight = float(orientation_weight)
        self.null_gain = float(null_gain)
        self.max_joint_step = float(max_joint_step)
        # Scratch buffers reused every call (the controller runs several times per env step).
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self._site_quat = np.zeros(4)
        self._site_quat_inv = np.zeros(4)
        self._quat_err = np.zeros(4)
        self._rot_err = np.zeros(3)
        n = len(joint_ids)
        self._jac = np.zeros((6, n))
        self._err = np.zeros(6)
        self._vel = np.zeros(6)
        self._chol = np.zeros((6, 6))
        self._jac_posture = np.zeros(6)
        self._solved = np.zeros(6)
        self._dq = np.zeros(n)
        self._qvel_target = np.zeros(n)
        self._diag = slice(None, None, 7)  # the diagonal of a flattened 6x6 matrix
        self._damping_sq = self.damping * self.damping

    def joint_targets(
        self,
        data: mujoco.MjData,
        target_pos: np.ndarray,
        target_quat: np.ndarray,
        target_vel: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One DLS step from the current joint positions toward ``(target_pos, target_quat)``.

        Args:
            data: current MuJoCo data (kinematics must be up to date, as after ``mj_step``/``mj_forward``).
            target_pos: ``(3,) float64`` site position target in the world frame.
            target_quat: ``(4,) float64`` site orientation target (w, x, y, z) in the world frame.
            target_vel: ``(3,) float64`` linear velocity of the moving target (m/s), or ``None``.

        Returns:
            ``(qpos_target, qvel_target)``: ``(n,) float64`` joint position targets within the joint
            limits, and the joint velocities ``J^+ [target_vel; 0]`` that move the site with the target
            (zeros without ``target_vel``), for velocity feedforward.
        """
        mujoco.mj_jacSite(self.model, data, self._jacp, self._jacr, self.site_id)
        jac = self._jac
        jac[:3] = self._jacp[:, self._dof_index]
        jac[3:] = self.orientation_weight * self._jacr[:, self._dof_index]

        # Pose error: position, then orientation as a world-frame rotation vector of
        # q_err = q_target * q_site^-1, both weighted like their Jacobian rows.
        err = self._err
        err[:3] = target_pos - data.site_xpos[self.site_id]
        mujoco.mju_mat2Quat(self._site_quat, data.site_xmat[self.site_id])
        mujoco.mju_negQuat(self._site_quat_inv, self._site_quat)
        mujoco.mju_mulQuat(self._quat_err, target_quat, self._site_quat_inv)
        mujoco.mju_quat2Vel(self._rot_err, self._quat_err, 1.0)
        err[3:] = self.orientation_weight * self._rot_err
        vel = self._vel
        vel[:3] = 0.0 if target_vel is None else target_vel
        vel[3:] = 0.0

        qpos = data.qpos[self._qpos_index]
        # Null-space posture term: (I - J^+ J) posture moves the elbow toward the rest posture without
        # moving the tool. With J^+ = J^T (J J^T + lambda^2 I)^-1 (damped least squares) the whole step
        # is dq = posture + J^T (J J^T + lambda^2 I)^-1 (error - J posture): one 6x6 Cholesky factor.
        posture = self.null_gain * (self.rest_qpos - qpos)
        chol = self._chol
        mujoco.mju_mulMatMatT(chol, jac, jac)
        chol.flat[self._diag] += self._damping_sq
        mujoco.mju_cholFactor(chol, 0.0)
        mujoco.mju_mulMatVec(self._jac_posture, jac, posture)
        err -= self._jac_posture
        mujoco.mju_cholSolve(self._solved, chol, err)
        mujoco.mju_mulMatTVec(self._dq, jac, self._solved)
        dq = self._dq + posture
        # np.minimum / np.maximum: what np.clip computes, without its Python-level dispatch
        np.minimum(np.maximum(dq, -self.max_joint_step, out=dq), self.max_joint_step, out=dq)
        # Velocity feedforward: J^+ [target_vel; 0].
        mujoco.mju_cholSolve(self._solved, chol, vel)
        mujoco.mju_mulMatTVec(self._qvel_target, jac, self._solved)
        qvel_target = self._qvel_target.copy()
        return np.minimum(np.maximum(qpos + dq, self.joint_low), self.joint_high), qvel_target


def _as_slice(index: np.ndarray) -> slice | np.ndarray:
    """``index`` as a slice when it is a contiguous ascending run, else as it is."""
    if len(index) and np.array_equal(index, np.arange(index[0], index[0] + len(index))):
        return slice(int(index[0]), int(index[0]) + len(index))
    return index
