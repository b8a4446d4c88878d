"""Recording demonstrations: input devices (keyboard, gamepad, spacemouse, experts) and the recording loop."""
