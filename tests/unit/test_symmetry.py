"""Averaging over flips and quarter turns: one view is the function itself, a group of views
makes the result equivariant under that group, and each output is turned back before it counts."""

import numpy as np
import pytest

from dicomnode.imaging.symmetry import VIEW_COUNTS, averaged_over_views, turned


def skewed(stack: np.ndarray) -> np.ndarray:
    """Not equivariant under any flip or turn: weights rows and columns differently."""
    rows = np.arange(stack.shape[1], dtype=np.float32)[:, None]
    cols = np.arange(stack.shape[2], dtype=np.float32)[None, :]
    return stack * (1 + rows / 7) + np.roll(stack, 1, axis=2) + cols / 3


def mirror(stack: np.ndarray) -> np.ndarray:
    return stack[:, :, ::-1]


def upside_down(stack: np.ndarray) -> np.ndarray:
    return stack[:, ::-1, :]


def quarter_turn(stack: np.ndarray) -> np.ndarray:
    return np.rot90(stack, 1, axes=(1, 2))


def transposed(stack: np.ndarray) -> np.ndarray:
    return np.swapaxes(stack, 1, 2)


STACK = np.random.default_rng(0).random((2, 9, 9), dtype=np.float32)
GROUPS = {2: [mirror], 4: [mirror, upside_down], 8: [mirror, upside_down, quarter_turn, transposed]}


def test_one_view_is_the_function_itself() -> None:
    np.testing.assert_array_equal(averaged_over_views(skewed, STACK, 1), skewed(STACK))


@pytest.mark.parametrize("views", [2, 4, 8])
def test_averaged_over_a_group_the_result_turns_with_its_input(views: int) -> None:
    out = averaged_over_views(skewed, STACK, views)
    for turn in GROUPS[views]:
        np.testing.assert_allclose(
            averaged_over_views(skewed, turn(STACK), views), turn(out), rtol=1e-6, atol=1e-5
        )


def test_the_function_alone_does_not_turn_with_its_input() -> None:
    """What the test above would miss if averaging did nothing."""
    for turn in GROUPS[8]:
        assert np.abs(skewed(turn(STACK)) - turn(skewed(STACK))).max() > 0.1


@pytest.mark.parametrize("views", VIEW_COUNTS)
def test_every_output_is_turned_back_before_it_counts(views: int) -> None:
    """A function that is already equivariant comes out unchanged, also on a non-square stack
    (a quarter-turned view is W x H)."""
    stack = np.random.default_rng(1).random((3, 12, 7), dtype=np.float32)

    def doubled(views_stack: np.ndarray) -> np.ndarray:
        return 2 * views_stack

    out = averaged_over_views(doubled, stack, views)
    assert out.shape == stack.shape
    np.testing.assert_allclose(out, 2 * stack, rtol=1e-6)


def test_only_whole_groups_of_views_are_accepted() -> None:
    with pytest.raises(ValueError, match=r"views must be one of \(1, 2, 4, 8\), not 3"):
        averaged_over_views(skewed, STACK, 3)


def test_turned_takes_an_image_or_a_stack_alike() -> None:
    """Training turns 2-D patches with the same function the inference turns stacks with."""
    for turns, mirrored in [(0, True), (1, False), (3, True)]:
        np.testing.assert_array_equal(
            turned(STACK, turns, mirrored)[1], turned(STACK[1], turns, mirrored)
        )
    np.testing.assert_array_equal(turned(STACK[0], 1, True), np.fliplr(np.rot90(STACK[0])))
