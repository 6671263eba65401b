"""A typical HDevelop heatmap script, ported to Python line by line.

Each Python statement is preceded by the HDevelop line it replaces, as a comment (HDevelop
comments keep their '*'). Run it as it is to explain the demo images with the demo model, or
give a model, an image folder and an output folder:

    python examples/hdevelop_port_heatmap.py [MODEL.onnx IMAGE_DIR OUT_DIR]

The pictures land in OUT_DIR (default out/hdevelop_port/), one per image and method.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dlheatmap.halcon as ha


def explain_folder(model_file: str, image_dir: str, out_dir: str) -> list[str]:
    """The ported script: returns the picture files written."""
    written = []
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    # * Read the classifier and prepare it for inference.
    # read_dl_model (ModelFile, DLModelHandle)
    DLModelHandle = ha.read_dl_model(model_file)
    # set_dl_model_param (DLModelHandle, 'runtime', 'cpu')
    ha.set_dl_model_param(DLModelHandle, "runtime", "cpu")
    # get_dl_model_param (DLModelHandle, 'class_names', ClassNames)
    ClassNames = ha.get_dl_model_param(DLModelHandle, "class_names")
    print("classes:", ClassNames)
    # * Preprocessing parameters from the model (size, channels, grey value range).
    # create_dl_preprocess_param_from_model (DLModelHandle, 'none', 'full_domain', [], [], [],
    #                                        DLPreprocessParam)
    DLPreprocessParam = ha.create_dl_preprocess_param_from_model(
        DLModelHandle, "none", "full_domain", [], [], [])
    # * Generic parameters of the heatmap operator.
    # create_dict (GenParamHeatmap)
    GenParamHeatmap = ha.create_dict()
    # set_dict_tuple (GenParamHeatmap, 'scaling', 'scale_after_relu')
    ha.set_dict_tuple(GenParamHeatmap, "scaling", "scale_after_relu")
    # * Display settings, and the dict that keeps the windows.
    # create_dict (GenParamDisplay)
    GenParamDisplay = ha.create_dict()
    # set_dict_tuple (GenParamDisplay, 'heatmap_color_scheme', 'jet')
    ha.set_dict_tuple(GenParamDisplay, "heatmap_color_scheme", "jet")
    # create_dict (WindowHandleDict)
    WindowHandleDict = ha.create_dict()
    # list_image_files (ImageDir, 'default', [], ImageFiles)
    ImageFiles = sorted(str(p) for p in Path(image_dir).iterdir()
                        if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"))
    # for Index := 0 to |ImageFiles| - 1 by 1
    for Index in range(len(ImageFiles)):
        # read_image (Image, ImageFiles[Index])
        Image = ha.read_image(ImageFiles[Index])
        # gen_dl_samples_from_images (Image, DLSample)
        DLSample = ha.gen_dl_samples_from_images(Image)
        # preprocess_dl_samples (DLSample, DLPreprocessParam)
        ha.preprocess_dl_samples(DLSample, DLPreprocessParam)
        # gen_dl_model_heatmap (DLModelHandle, DLSample, 'grad_cam', [], GenParamHeatmap,
        #                       DLResult)
        DLResult = ha.gen_dl_model_heatmap(DLModelHandle, DLSample, "grad_cam", [],
                                           GenParamHeatmap)
        # get_dict_tuple (DLResult, 'classification_class_names', PredictedNames)
        PredictedNames = ha.get_dict_tuple(DLResult, "classification_class_names")
        # get_dict_tuple (DLResult, 'classification_confidences', Confidences)
        Confidences = ha.get_dict_tuple(DLResult, "classification_confidences")
        # dev_display_dl_data (DLSample, DLResult, [], 'heatmap_grad_cam', GenParamDisplay,
        #                      WindowHandleDict)
        ha.dev_display_dl_data(DLSample, DLResult, [], "heatmap_grad_cam", GenParamDisplay,
                               WindowHandleDict)
        # get_dict_tuple (WindowHandleDict, 'heatmap_grad_cam', WindowHandles)
        WindowHandles = ha.get_dict_tuple(WindowHandleDict, "heatmap_grad_cam")
        # dump_window (WindowHandles[0], 'png', OutDir + '/' + Index + '_grad_cam')
        ha.dump_window(WindowHandles[0], "png", f"{out_dir}/{Index}_grad_cam")
        # * The same sample with Guided Grad-CAM, for the class found above.
        # get_dict_tuple (DLResult, 'classification_class_ids', ClassIDs)
        ClassIDs = ha.get_dict_tuple(DLResult, "classification_class_ids")
        # gen_dl_model_heatmap (DLModelHandle, DLSample, 'guided_grad_cam', ClassIDs[0], [],
        #                       DLResultGuided)
        DLResultGuided = ha.gen_dl_model_heatmap(DLModelHandle, DLSample, "guided_grad_cam",
                                                 ClassIDs[0], [])
        # dev_display_dl_data (DLSample, DLResultGuided, [], 'heatmap_guided_grad_cam', [],
        #                      WindowHandleDict)
        ha.dev_display_dl_data(DLSample, DLResultGuided, [], "heatmap_guided_grad_cam", [],
                               WindowHandleDict)
        # get_dict_tuple (WindowHandleDict, 'heatmap_guided_grad_cam', WindowHandles)
        WindowHandles = ha.get_dict_tuple(WindowHandleDict, "heatmap_guided_grad_cam")
        # dump_window (WindowHandles[0], 'png', OutDir + '/' + Index + '_guided_grad_cam')
        ha.dump_window(WindowHandles[0], "png", f"{out_dir}/{Index}_guided_grad_cam")
        # * ImageFiles[Index] + ': ' + PredictedNames[0] + ' (' + Confidences[0]$'.3f' + ')'
        print(f"{ImageFiles[Index]}: {PredictedNames[0]} ({Confidences[0]:.3f})")
        written += [f"{out_dir}/{Index}_grad_cam.png", f"{out_dir}/{Index}_guided_grad_cam.png"]
    # endfor
    # clear_dl_model (DLModelHandle)
    ha.clear_dl_model(DLModelHandle)
    return written


def main(argv: list[str]) -> int:
    from demo_model import example_inputs

    inputs = example_inputs(argv, "out/hdevelop_port")
    if inputs is None:
        print(__doc__, file=sys.stderr)
        return 2
    model_file, image_dir, out_dir = inputs
    written = explain_folder(model_file, image_dir, out_dir)
    print(f"{len(written)} pictures in {out_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
